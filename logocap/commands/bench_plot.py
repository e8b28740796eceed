"""``logocap bench plot``: the speed-accuracy picture (paper Fig. 2) from the benchmark JSONs.

Reads every ``*.json`` in ``--results`` (default ``benchmarks/results``), keeps the rows that
have both ``AP`` and ``ms_per_image`` and writes the PNG atomically to ``--out`` (default
``benchmarks/results/speed_accuracy.png``). See logocap/speed_accuracy.py.
"""
from __future__ import annotations

import sys
from pathlib import Path

from ..utils import LogocapError


def run(args) -> int:
    from ..speed_accuracy import DEFAULT_PNG, DEFAULT_RESULTS, collect_points, plot_speed_accuracy
    from .common import check_out

    folder = Path(args.results) if args.results else DEFAULT_RESULTS
    out = Path(args.out) if args.out else folder / DEFAULT_PNG.name
    if out.suffix.lower() != ".png":
        raise LogocapError(f"--out must be a .png file, got {out}")
    check_out(out, kind="file")
    points, problems = collect_points(folder)
    for p in problems:
        print(f"warning: skipped {p}", file=sys.stderr)
    if not points:
        raise LogocapError(f"no benchmark rows with both AP and ms_per_image in the JSON files of "
                           f"{folder}: nothing to plot")
    plot_speed_accuracy(points, out)
    files = sorted({p["file"] for p in points})
    print(f"{len(points)} points from {len(files)} file(s): {', '.join(files)}")
    print(f"wrote {out}")
    return 0
