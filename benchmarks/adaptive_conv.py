#!/usr/bin/env python
"""Cost of one pure-PyTorch adaptive conv block (DEKR AdaptBlock) vs a plain 3x3 conv block.

Both blocks map C -> C channels at the same size and end with BN + residual + ReLU:
  plain   3x3 conv (no bias) -> BN -> + x -> ReLU
  adapt   AdaptBlock: one 3x3 conv for A (4 ch) and t (2 ch) -> sampling grid p + A r + t ->
          one grid_sample for the 9 taps -> one bmm with the kernel -> BN -> + x -> ReLU
The adapt row is also split into its parts (the A/t convs, the sampling, the matmul).
Timing: eval mode, no grad (forward) and train mode (forward + backward); the candidates are
run interleaved, one call each per round, and the median per call is reported.

    taskset -c 0 python benchmarks/adaptive_conv.py            # 1 thread
    python benchmarks/adaptive_conv.py --sizes 128 160 --channels 15 --rounds 30

Prints a table and writes benchmarks/results/adaptive_conv_<date>.json (date, CPU and flags,
threads, commit).
"""
from __future__ import annotations

import argparse
import statistics
import time

from _common import table, write_results  # first: puts the repository on sys.path

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from logocap.models.adaptive import AdaptBlock, _mix, adaptive_grid  # noqa: E402
from logocap.models.blocks import BN_MOMENTUM  # noqa: E402
from logocap.utils import machine_info  # noqa: E402

COLUMNS = [("C", "3d"), ("map", ">7s"), ("plain", "8.3f"), ("adapt", "8.3f"), ("ratio", "6.2f"),
           ("A,t conv", "9.3f"), ("sampling", "9.3f"), ("matmul", "8.3f"), ("|", "s"),
           ("train plain", "11.3f"), ("train adapt", "11.3f"), ("ratio", "6.2f")]


class PlainBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(c, momentum=BN_MOMENTUM)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)) + x)


def _parts(blk: AdaptBlock, x: torch.Tensor) -> dict:
    """Callables for the three parts of the adaptive block (forward only), as the block runs
    them."""
    b, c, h, w = x.shape
    tm, tr = blk.transform_matrix_conv, blk.translation_conv
    wt, bs = torch.cat([tm.weight, tr.weight]), torch.cat([tm.bias, tr.bias])
    at = F.conv2d(x, wt, bs, padding=1)
    r = blk.regular_matrix

    def sampling():
        return F.grid_sample(x, adaptive_grid(at, r), align_corners=False).view(b, c, 9, h, w)

    taps = sampling()
    return {
        "adapt: A,t convs": lambda: F.conv2d(x, wt, bs, padding=1),
        "adapt: sampling": sampling,
        "adapt: matmul": lambda: _mix(taps, blk.adapt_conv.weight, None),
    }


def _time(fns: dict, rounds: int, warmup: int = 3) -> dict:
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {k: [] for k in fns}
    for _ in range(rounds):  # interleaved: every candidate once per round
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: 1000.0 * statistics.median(v) for k, v in times.items()}


def _train_step(block: nn.Module, x: torch.Tensor):
    def run():
        block.zero_grad(set_to_none=True)
        block(x).sum().backward()
    return run


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--channels", type=int, nargs="+", default=[15, 32],
                   help="block channels (15 = DEKR's per-joint branch)")
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 160],
                   help="square map sizes (128 = a 512 px input at stride 4, 160 = 640 px)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None, help="JSON path (default "
                   "benchmarks/results/adaptive_conv_<date>.json)")
    args = p.parse_args(argv)
    dev = torch.device(args.device)
    torch.manual_seed(0)
    rows = []
    for c in args.channels:
        for s in args.sizes:
            x = torch.randn(args.batch, c, s, s, device=dev)
            plain, adapt = PlainBlock(c).to(dev).eval(), AdaptBlock(c).to(dev).eval()
            # a non-trivial deformation (the released init A = 0 would read one pixel 9 times)
            nn.init.normal_(adapt.transform_matrix_conv.weight, std=0.05)
            nn.init.normal_(adapt.translation_conv.weight, std=0.05)
            with torch.no_grad():
                fwd = _time({"plain 3x3 block": lambda: plain(x), "adapt block": lambda: adapt(x),
                             **_parts(adapt, x)}, args.rounds)
            plain.train(), adapt.train()
            xg = x.clone().requires_grad_()
            bwd = _time({"plain 3x3 block": _train_step(plain, xg),
                         "adapt block": _train_step(adapt, xg)}, max(args.rounds // 2, 3))
            rows.append({"channels": c, "size": s, "batch": args.batch,
                         "forward_ms": fwd, "train_step_ms": bwd,
                         "ratio_forward": fwd["adapt block"] / fwd["plain 3x3 block"],
                         "ratio_train_step": bwd["adapt block"] / bwd["plain 3x3 block"]})

    info = machine_info()
    print(f"adaptive conv block vs plain 3x3 block, {args.device}, {info['threads']} thread(s), "
          f"batch {args.batch}, median ms per call over {args.rounds} interleaved rounds")
    lines = []
    for r in rows:
        f, b = r["forward_ms"], r["train_step_ms"]
        lines.append((r["channels"], f"{r['size']:3d}x{r['size']:<3d}", f["plain 3x3 block"],
                      f["adapt block"], r["ratio_forward"], f["adapt: A,t convs"], f["adapt: sampling"],
                      f["adapt: matmul"], "|", b["plain 3x3 block"], b["adapt block"],
                      r["ratio_train_step"]))
    print(table(COLUMNS, lines))
    write_results("adaptive_conv", rows, args, info, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
