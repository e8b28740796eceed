#!/usr/bin/env python
"""Training speed per model and precision: images per second of a whole training step
(forward, loss, backward, Adam step) on real synthetic batches, fp32 vs bf16 autocast, with and
without channels_last, measured interleaved in one run (the ratios are what to read: the
machine is noisy).

    python benchmarks/train_speed.py                                # tiny and small, 256 px, batch 16
    python benchmarks/train_speed.py --models center_offset_hrnet_small --threads 2
    python benchmarks/train_speed.py --models dekr_hrnet_small,hgr_hrnet_small,sar_hrnet_small_topdown \
        --settings bf16+cl --threads 1 --steps 10 --rounds 1 --cpu-time

Every model trains on a batch of its own family's training data (bottom-up targets with the
family's options at 256 px; 128x96 person crops for top-down models), so the samples per second
are images for bottom-up models and person crops for top-down ones; ``samples_per_epoch`` is
the training set's length in those units, and ``minutes_per_epoch`` the time of one epoch.
``--cpu-time`` times with the process CPU time instead of the wall clock (one thread only), for a
core that other processes share.

Prints a table and writes benchmarks/results/train_speed_<date>.json (date, CPU and its flags,
threads, commit). Data loading is not timed (it runs in workers during training).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from logocap.config import load_config  # noqa: E402
from logocap.data.coco import collate_train  # noqa: E402
from logocap.precision import resolve_precision  # noqa: E402
from logocap.engine.recipes import ensure_synthetic  # noqa: E402
from logocap.engine.train import TrainStep, build_train_dataset  # noqa: E402
from logocap.families import family_of  # noqa: E402
from logocap.losses import build_criterion  # noqa: E402
from logocap.models import create_model  # noqa: E402
from logocap.utils import atomic_write_text, machine_info  # noqa: E402

SETTINGS = {"fp32": ("fp32", False), "fp32+cl": ("fp32", True), "bf16+cl": ("bf16", True)}
TOPDOWN_CROP = 128  # crop height of the top-down models (as their synthetic recipes)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--models", default="center_offset_hrnet_tiny,center_offset_hrnet_small,"
                                       "logocap_hrnet_tiny,logocap_hrnet_small")
    p.add_argument("--data", default="data/synthetic")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=4, help="timed steps per setting and round")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds (median taken)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--settings", default=",".join(SETTINGS),
                   help=f"comma list of {', '.join(SETTINGS)} (speedups are against the first)")
    p.add_argument("--cpu-time", action="store_true",
                   help="time with the process CPU time (needs --threads 1)")
    p.add_argument("--results", default=None)
    args = p.parse_args(argv)
    settings = [SETTINGS[s] for s in args.settings.split(",") if s in SETTINGS]
    if len(settings) != len(args.settings.split(",")):
        p.error(f"--settings: choose from {', '.join(SETTINGS)}, got {args.settings}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cpu_time and torch.get_num_threads() != 1:
        p.error("--cpu-time measures one thread: add --threads 1")
    clock = time.process_time if args.cpu_time else time.perf_counter
    ensure_synthetic(args.data, "default", 2000, 200, 256, seed=0)

    runs, batches, epoch_samples = {}, {}, {}
    for name in args.models.split(","):
        topdown = family_of(name).topdown
        cfg = load_config(None, [f"data.root={args.data}", f"model.name={name}",
                                 f"data.input_size={TOPDOWN_CROP if topdown else 256}"])
        dataset = build_train_dataset(cfg)  # the family's targets (or person crops)
        collate = getattr(dataset, "collate_fn", collate_train)
        batches[name] = collate([dataset[i] for i in range(args.batch)])
        epoch_samples[name] = len(dataset)
        for prec, cl in settings:
            torch.manual_seed(0)
            model = create_model(name, num_keypoints=dataset.meta.num_keypoints)
            precision = resolve_precision(prec, "cpu", cl)
            precision.prepare_model(model)
            step = TrainStep(model, build_criterion(model, cfg["loss"], cfg["test"], dataset.meta),
                             precision).train()
            runs[(name, prec, cl)] = (step, torch.optim.Adam(model.parameters(), 1e-3))

    def one(step, opt, batch):
        loss = step(batch)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    times = {k: [] for k in runs}
    for key, (step, opt) in runs.items():  # warm-up (oneDNN primitive creation)
        one(step, opt, batches[key[0]])
    for _ in range(args.rounds):
        for key, (step, opt) in runs.items():
            t0 = clock()
            for _ in range(args.steps):
                one(step, opt, batches[key[0]])
            times[key].append((clock() - t0) / args.steps)

    info = machine_info()
    rows = []
    first = settings[0][0] + ("+cl" if settings[0][1] else "")
    print(f"{'model':<28}{'precision':<22}{'samples/s':>10}{'x ' + first:>10}{'min/epoch':>10}")
    for name in args.models.split(","):
        ref = statistics.median(times[(name, *settings[0])])
        for prec, cl in settings:
            t = statistics.median(times[(name, prec, cl)])
            label = prec + (" + channels_last" if cl else "")
            per_epoch = epoch_samples[name] / (args.batch / t) / 60
            rows.append({"model": name, "precision": prec, "channels_last": cl,
                         "img_per_s": args.batch / t,  # samples (person crops for top-down)
                         "samples": "person crops" if family_of(name).topdown else "images",
                         "samples_per_epoch": epoch_samples[name], "minutes_per_epoch": per_epoch,
                         f"speedup_vs_{first}": ref / t})
            print(f"{name:<28}{label:<22}{args.batch / t:>10.1f}{ref / t:>10.2f}{per_epoch:>10.1f}")
    path = Path(args.results) if args.results else \
        ROOT / "benchmarks" / "results" / f"train_speed_{info['date'][:10]}.json"
    atomic_write_text(path, json.dumps({"machine": info, "settings": vars(args), "rows": rows},
                                       indent=1))
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
