#!/usr/bin/env python
"""The LOGO-CAP global-KAM stage, reference vs fast (``test.impl``), in one interleaved run.

The stage as ``codecs.logocap_decode.refine`` runs it on N candidates x K joints:
  sampling   the 97x97 global KEMs (bilinear reads of the upsampled heatmaps around each joint)
  reweigh    Eqn. 8 Gaussian prior (sigma 16 input px)
  conv       Eqn. 9 adaptation: the grouped conv of each KEM with its 11x11 KAM / 121
  top2       the 0.75 / 0.25 top-2 average of each refined map
``reference`` samples every grid point with the per-point gather (as the released code does) and
runs each step on all maps at once (a grouped conv over all of them, topk); ``fast`` is the
inference path of ``test.impl: fast`` (``_global_stage_fast``): the separable window gather, all
four steps on chunks of ``MAP_CHUNK`` maps that stay in the cache, the top-2 from the 3 best rows.
Its steps are interleaved chunk by chunk, so only its total is timed. The run checks that both
give identical offsets and values.

Inputs: random upsampled heatmaps of a W32 input (default 512 x 768, the test size of a
landscape COCO photo), candidate joints uniform over the image (so some windows touch the
borders), random KAMs in [0, 1]; the timing does not depend on the values. Each round times
reference and fast once, alternating which goes first; medians over the rounds.

    taskset -c 0 env OMP_NUM_THREADS=1 python benchmarks/global_kams.py
    python benchmarks/global_kams.py --candidates 1 30 --rounds 9 --threads 2

Prints a table and writes benchmarks/results/global_kams_<date>.json (date, CPU model and flags,
threads, commit, settings, rows).
"""
from __future__ import annotations

import argparse
import statistics
import time

from _common import table, write_results  # first: puts the repository on sys.path

import torch  # noqa: E402

from logocap.codecs.logocap_decode import (MAP_CHUNK, _global_stage_fast, adapt, decode_cfg,  # noqa: E402
                                           global_kems, reweigh, top2)
from logocap.meta import COCO  # noqa: E402
from logocap.utils import machine_info  # noqa: E402

STEPS = ("sampling", "reweigh", "conv", "top2")


def _now():
    return time.perf_counter(), time.process_time()


@torch.no_grad()
def run_stage(up, bi, poses, kams, cfg) -> tuple[dict, dict, tuple]:
    """One global-KAM stage -> (wall s per step, process CPU s per step, (offsets, values)).
    The fast path's steps run chunk by chunk: one "total" only."""
    if cfg["impl"] == "fast":
        t0 = _now()
        out = _global_stage_fast(up, bi, poses, kams, cfg, "official")
        t1 = _now()
        return {"total": t1[0] - t0[0]}, {"total": t1[1] - t0[1]}, out
    t = [_now()]
    gk = global_kems(up, bi, poses, int(cfg["global_size"]), "official", "reference")
    t.append(_now())
    gk = reweigh(gk, cfg)
    t.append(_now())
    refined = adapt(gk, kams)
    t.append(_now())
    out = top2(refined, float(cfg["top2_lambda"]))
    t.append(_now())
    wall = {s: t[i + 1][0] - t[i][0] for i, s in enumerate(STEPS)}
    cpu = {s: t[i + 1][1] - t[i][1] for i, s in enumerate(STEPS)}
    wall["total"], cpu["total"] = sum(wall.values()), sum(cpu.values())
    return wall, cpu, out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--candidates", type=int, nargs="+", default=[30])
    p.add_argument("--height", type=int, default=512, help="network input height (px)")
    p.add_argument("--width", type=int, default=768, help="network input width (px)")
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds (after 1 warm-up)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--out", default=None,
                   help="JSON path (default benchmarks/results/global_kams_<date>.json)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    k = COCO.num_keypoints  # the stage runs per joint: the COCO set, as in the paper
    up = torch.rand(1, k + 1, args.height, args.width, generator=g)
    rows = []
    for n in args.candidates:
        poses = torch.rand(n, k, 2, generator=g) * torch.tensor([args.width - 1.0, args.height - 1.0])
        bi = torch.zeros(n, dtype=torch.long)
        kams = torch.rand(n, k, 11, 11, generator=g)
        cfgs = {impl: decode_cfg({"impl": impl}) for impl in ("reference", "fast")}
        outs = {impl: run_stage(up, bi, poses, kams, c)[2] for impl, c in cfgs.items()}  # warm-up
        identical = all(torch.equal(a, b) for a, b in zip(outs["reference"], outs["fast"]))
        times = {clock: {impl: {} for impl in cfgs} for clock in ("wall", "cpu")}
        for r in range(args.rounds):
            order = ("reference", "fast") if r % 2 == 0 else ("fast", "reference")
            for impl in order:
                wall, cpu, _ = run_stage(up, bi, poses, kams, cfgs[impl])
                for clock, st in (("wall", wall), ("cpu", cpu)):
                    for s, v in st.items():
                        times[clock][impl].setdefault(s, []).append(v)
        row = {"candidates": n, "maps": n * k, "map_chunk": MAP_CHUNK, "outputs_identical": identical}
        for clock, tc in times.items():
            med = {impl: {s: 1000.0 * statistics.median(v) for s, v in d.items()}
                   for impl, d in tc.items()}
            paired = [a / b for a, b in zip(tc["reference"]["total"], tc["fast"]["total"])]
            row[f"{clock}_ms"] = med
            row[f"{clock}_ratio_of_medians"] = med["reference"]["total"] / med["fast"]["total"]
            row[f"{clock}_median_paired_ratio"] = statistics.median(paired)
        rows.append(row)

    info = machine_info()
    print(f"global-KAM stage, input {args.height}x{args.width}, {info['threads']} thread(s), "
          f"{info['cpu']}; ms, median of {args.rounds} interleaved rounds (wall clock and the "
          f"process's CPU time)")
    columns = [("cand", "4d"), ("clock", ">5s"), ("impl", ">9s")] + \
        [(s, "9.1f") for s in STEPS + ("total",)] + [("ratio", "6.2f"), ("paired", "6.2f"), ("same", ">5s")]
    lines = []
    for r in rows:
        for clock in ("wall", "cpu"):
            for impl in ("reference", "fast"):  # the ratios and the check on the fast line
                tail = (r[f"{clock}_ratio_of_medians"], r[f"{clock}_median_paired_ratio"],
                        str(r["outputs_identical"])) if impl == "fast" else (None, None, None)
                lines.append((r["candidates"], clock, impl,
                              *(r[f"{clock}_ms"][impl].get(s) for s in STEPS + ("total",)), *tail))
    print(table(columns, lines))
    write_results("global_kams", rows, args, info, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
