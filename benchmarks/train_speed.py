#!/usr/bin/env python
"""Training speed per model and precision: images per second of a whole training step
(forward, loss, backward, Adam step) on real synthetic batches, fp32 vs bf16 autocast, with and
without channels_last, measured interleaved in one run (the ratios are what to read: the
machine is noisy).

    python benchmarks/train_speed.py                                # tiny and small, 256 px, batch 16
    python benchmarks/train_speed.py --models center_offset_hrnet_small --threads 2

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
from logocap.losses import build_criterion  # noqa: E402
from logocap.models import create_model  # noqa: E402
from logocap.utils import atomic_write_text, machine_info  # noqa: E402

SETTINGS = (("fp32", False), ("fp32", True), ("bf16", True))


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
    p.add_argument("--results", default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    ensure_synthetic(args.data, "default", 2000, 200, 256, seed=0)
    cfg = load_config(None, [f"data.root={args.data}", "data.input_size=256"])
    dataset = build_train_dataset(cfg)
    batch = collate_train([dataset[i] for i in range(args.batch)])

    runs = {}
    for name in args.models.split(","):
        for prec, cl in SETTINGS:
            torch.manual_seed(0)
            model = create_model(name, num_keypoints=dataset.meta.num_keypoints)
            precision = resolve_precision(prec, "cpu", cl)
            precision.prepare_model(model)
            step = TrainStep(model, build_criterion(model, cfg["loss"], cfg["test"], dataset.meta),
                             precision).train()
            runs[(name, prec, cl)] = (step, torch.optim.Adam(model.parameters(), 1e-3))

    def one(step, opt):
        loss = step(batch)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    times = {k: [] for k in runs}
    for key, (step, opt) in runs.items():  # warm-up (oneDNN primitive creation)
        one(step, opt)
    for _ in range(args.rounds):
        for key, (step, opt) in runs.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                one(step, opt)
            times[key].append((time.perf_counter() - t0) / args.steps)

    info = machine_info()
    rows = []
    print(f"{'model':<28}{'precision':<22}{'img/s':>8}{'x fp32':>8}")
    for name in args.models.split(","):
        ref = statistics.median(times[(name, "fp32", False)])
        for prec, cl in SETTINGS:
            t = statistics.median(times[(name, prec, cl)])
            label = prec + (" + channels_last" if cl else "")
            rows.append({"model": name, "precision": prec, "channels_last": cl,
                         "img_per_s": args.batch / t, "speedup_vs_fp32": ref / t})
            print(f"{name:<28}{label:<22}{args.batch / t:>8.1f}{ref / t:>8.2f}")
    path = Path(args.results) if args.results else \
        ROOT / "benchmarks" / "results" / f"train_speed_{info['date'][:10]}.json"
    atomic_write_text(path, json.dumps({"machine": info, "settings": vars(args), "rows": rows},
                                       indent=1))
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
