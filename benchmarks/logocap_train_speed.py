#!/usr/bin/env python
"""LOGO-CAP training step of this checkout against an older revision of the library, measured
interleaved in ONE process (the ratio is what to read: the core may be shared and noisy).

    python benchmarks/logocap_train_speed.py --baseline 883dcf6~2 --threads 1 --cpu-time

The library at ``--baseline`` is written by ``git archive`` into a temporary folder as the package
``logocap_baseline`` and imported beside ``logocap``; each side builds its own model (same
weights), precision, criterion and ``TrainStep``, and both train on the same batch of synthetic
images with LOGO-CAP targets. Timed: forward, losses, backward and Adam step, alternating
baseline / this checkout for ``--rounds`` rounds (median). Also reported:
- "network only": the same model trained with the center-offset losses alone (what the LOGO-CAP
  criterion adds on top of the network is the difference);
- one fp32 step of each side from the same weights: whether the loss terms are equal and the
  largest gradient difference relative to each parameter's largest gradient;
- the data pipeline alone: images per second of ``dataset[i]`` in this process (what one loader
  worker delivers on one thread; training here runs 2 workers on the same core).

``--init`` (default: the committed synthetic center-offset checkpoint of the model's width) starts
from a trained network, as LOGO-CAP fine-tuning does: from random weights almost no candidate
passes the OKS gate and the LOGO-CAP part of the step is understated.

Prints a table and writes benchmarks/results/logocap_train_speed_<date>.json (machine, settings,
rows).
"""
from __future__ import annotations

import argparse
import copy
import importlib
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import ROOT, add_clock_arguments, clock_from_args, table, write_results  # puts ROOT first on sys.path

import torch  # noqa: E402

from logocap.config import load_config  # noqa: E402
from logocap.data.coco import collate_train  # noqa: E402
from logocap.engine.recipes import ensure_synthetic  # noqa: E402
from logocap.engine.train import build_train_dataset  # noqa: E402
from logocap.utils import LogocapError, machine_info  # noqa: E402

MODULES = {"models": "models", "pretrained": "models.pretrained", "losses": "losses",
           "center_offset": "losses.center_offset", "precision": "precision",
           "train": "engine.train"}


def library(package: str) -> dict:
    return {k: importlib.import_module(f"{package}.{m}") for k, m in MODULES.items()}


def import_baseline(rev: str, into: Path) -> dict:
    """The ``logocap`` package at git revision ``rev`` as ``logocap_baseline``."""
    try:
        tar = subprocess.run(["git", "archive", rev, "logocap"], cwd=ROOT, check=True,
                             capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise LogocapError(f"cannot read revision {rev!r} of the repository: {e}") from e
    subprocess.run(["tar", "-x", "-C", str(into)], input=tar, check=True)
    (into / "logocap").rename(into / "logocap_baseline")
    sys.path.insert(0, str(into))
    return library("logocap_baseline")


def default_init(model: str) -> str | None:
    width = model.rsplit("_", 1)[-1]
    path = ROOT / "checkpoints" / "synthetic" / f"center_offset_hrnet_{width}_256.pth"
    return str(path) if path.is_file() else None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--baseline", required=True, help="git revision to compare with (e.g. a commit)")
    p.add_argument("--models", default="logocap_hrnet_tiny,logocap_hrnet_small")
    p.add_argument("--init", default=None,
                   help="weights to start from (default: checkpoints/synthetic/center_offset_hrnet_"
                        "<width>_256.pth); 'none' = random")
    p.add_argument("--data", default="data/synthetic")
    p.add_argument("--num-train", type=int, default=2000, help="synthetic training images (made if missing)")
    p.add_argument("--num-val", type=int, default=200)
    p.add_argument("--size", type=int, default=256, help="image and input size")
    p.add_argument("--batch", type=int, default=12)
    p.add_argument("--precision", default="bf16", choices=("fp32", "bf16"))
    p.add_argument("--channels-last", default=True, action=argparse.BooleanOptionalAction)
    p.add_argument("--steps", type=int, default=2, help="timed steps per side and round")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median taken)")
    p.add_argument("--loader-images", type=int, default=24, help="images for the data-pipeline rate")
    add_clock_arguments(p)
    p.add_argument("--results", default=None)
    args = p.parse_args(argv)
    clock = clock_from_args(p, args)
    ensure_synthetic(args.data, "default", args.num_train, args.num_val, args.size, seed=0)
    tmp = tempfile.TemporaryDirectory()
    sides = {"baseline": import_baseline(args.baseline, Path(tmp.name)), "this": library("logocap")}

    rows, info = [], machine_info()
    for name in args.models.split(","):
        cfg = load_config(None, [f"data.root={args.data}", f"model.name={name}",
                                 f"data.input_size={args.size}"])
        dataset = build_train_dataset(cfg)
        t0 = clock()
        samples = [dataset[i] for i in range(max(args.batch, args.loader_images))]
        loader_img_s = len(samples) / (clock() - t0)
        batch = collate_train(samples[:args.batch])
        init = args.init or default_init(name)
        init = None if init == "none" else init
        torch.manual_seed(0)
        ref = sides["this"]["models"].create_model(name, num_keypoints=dataset.meta.num_keypoints)
        if init:
            sides["this"]["pretrained"].load_pretrained(ref, init)

        def build(lib, criterion=None):
            model = lib["models"].create_model(name, num_keypoints=dataset.meta.num_keypoints)
            model.load_state_dict(ref.state_dict())
            precision = lib["precision"].resolve_precision(args.precision, "cpu", args.channels_last)
            precision.prepare_model(model)
            crit = criterion or lib["losses"].build_criterion(model, cfg["loss"], cfg["test"], dataset.meta)
            return (lib["train"].TrainStep(model, crit, precision).train(),
                    torch.optim.Adam(model.parameters(), 1e-4), crit)

        # one fp32 step from the same weights: same losses?
        fp32 = {}
        for side, lib in sides.items():
            model = copy.deepcopy(ref).train()
            crit = lib["losses"].build_criterion(model, cfg["loss"], cfg["test"], dataset.meta)
            out = crit(model, batch)
            out["loss"].backward()
            fp32[side] = ({k: v.detach() for k, v in out.items()},
                          {k: q.grad for k, q in model.named_parameters() if q.grad is not None})
        (lo_b, g_b), (lo_t, g_t) = fp32["baseline"], fp32["this"]
        same_losses = all(torch.equal(lo_b[k], lo_t[k]) for k in lo_b)
        grad_diff = max(((g_b[k] - g_t[k]).abs().max() / g_b[k].abs().max().clamp_min(1e-30)).item()
                        for k in g_b) if g_b.keys() == g_t.keys() else float("nan")

        runs = {side: build(lib) for side, lib in sides.items()}
        runs["network only"] = build(sides["this"], sides["this"]["center_offset"].CenterOffsetCriterion(cfg["loss"]))

        def one(step, opt):
            loss = step(batch)["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        times = {k: [] for k in runs}
        for step, opt, _ in runs.values():  # warm-up (oneDNN primitive creation)
            one(step, opt)
        for _ in range(args.rounds):
            for key, (step, opt, _) in runs.items():
                t0 = clock()
                for _ in range(args.steps):
                    one(step, opt)
                times[key].append((clock() - t0) / args.steps)
        med = {k: statistics.median(v) for k, v in times.items()}
        for key in runs:
            rows.append({"model": name, "code": args.baseline if key == "baseline" else key,
                         "s_per_it": med[key], "img_per_s": args.batch / med[key],
                         "speedup_vs_baseline": med["baseline"] / med[key],
                         "times": times[key], "kept": getattr(runs[key][2], "last_num_kept", None),
                         "init": str(Path(init).relative_to(ROOT)) if init and Path(init).is_relative_to(ROOT) else init,
                         "fp32_losses_equal": same_losses if key == "this" else None,
                         "fp32_max_rel_grad_diff": grad_diff if key == "this" else None,
                         "loader_img_per_s": loader_img_s})

    print(table([("model", "<22"), ("code", "<14"), ("s/it", "7.2f"), ("img/s", "7.1f"),
                 ("x baseline", "11.2f"), ("kept", ">5")],
                [(r["model"], r["code"], r["s_per_it"], r["img_per_s"], r["speedup_vs_baseline"],
                  "" if r["kept"] is None else str(r["kept"])) for r in rows]))
    for r in rows:
        if r["code"] == "this":
            print(f"{r['model']}: fp32 losses equal: {r['fp32_losses_equal']}, largest gradient "
                  f"difference {r['fp32_max_rel_grad_diff']:.1e} of the parameter's largest; "
                  f"data pipeline {r['loader_img_per_s']:.1f} img/s on one thread")
    write_results("logocap_train_speed", rows, args, {**info, "clock": "cpu" if args.cpu_time else "wall"},
                  args.results)
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
