"""What the benchmark scripts share: the repository on ``sys.path``, fixed-width tables and the
results JSON (machine, settings, rows) under benchmarks/results/.

A script next to this file imports it first, before the library::

    from _common import ROOT, table, write_results  # puts ROOT first on sys.path

    print(table([("C", "3d"), ("ms", "8.3f")], [(c, ms) for c, ms in results]))
    write_results("my_bench", rows, args, machine_info(), args.out)
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Iterable, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the library of this checkout, not an installed one

from logocap.utils import atomic_write_text  # noqa: E402

__all__ = ["ROOT", "RESULTS", "table", "write_json", "write_results"]

RESULTS = ROOT / "benchmarks" / "results"

_SPEC = re.compile(r"(?:.?([<>^=]))?[-+ ]?z?#?0?(\d*)")  # [[fill]align][sign]..[width] of a spec
_NUMBER_TYPES = set("bcdoxXneEfFgG%")


def _title(title: str, spec: str) -> str:
    """``title`` padded like the cells of a column whose format spec is ``spec``."""
    align, width = _SPEC.match(spec).groups()
    if align is None:  # format()'s default: numbers to the right, text to the left
        align = ">" if spec[-1:] in _NUMBER_TYPES else "<"
    return f"{title:{'>' if align == '=' else align}{width}}"


def table(columns: Sequence[tuple[str, str]], rows: Iterable[Sequence], sep: str = " ") -> str:
    """A fixed-width text table: a header line, then one line per row.

    ``columns``: (title, format spec of the cells) pairs, e.g. ("ms", "8.3f"), ("model", "<28");
    a title takes its column's width and alignment (numbers right, text left where the spec names
    no alignment). A None cell is left blank; lines lose their trailing blanks.
    """
    def line(cells):
        return sep.join(cells).rstrip()

    out = [line(_title(title, spec) for title, spec in columns)]
    for row in rows:
        if len(row) != len(columns):
            raise ValueError(f"a row has {len(row)} cells, the table {len(columns)} columns")
        out.append(line(" " * len(_title("", spec)) if v is None else format(v, spec)
                        for v, (_, spec) in zip(row, columns)))
    return "\n".join(out)


def write_json(path, payload: dict) -> Path:
    """Write ``payload`` as indented JSON, atomically (a crash leaves the old file or none)."""
    atomic_write_text(path, json.dumps(payload, indent=1))
    return Path(path)


def write_results(name: str, rows: list, args, machine: dict, out=None) -> Path:
    """Write ``{"machine", "settings" (the parsed arguments), "rows"}`` to ``out``, or to
    benchmarks/results/<name>_<date>.json, and say where."""
    path = Path(out) if out else RESULTS / f"{name}_{machine['date'][:10]}.json"
    write_json(path, {"machine": machine, "settings": vars(args), "rows": rows})
    print(f"written {path}")
    return path


def add_clock_arguments(p) -> None:
    """--threads and --cpu-time, for scripts that time torch work."""
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--cpu-time", action="store_true",
                   help="time with the process CPU time (needs --threads 1): less sensitive to "
                        "other processes on the core than the wall clock")


def clock_from_args(p, args):
    """Apply --threads and return the clock --cpu-time asks for (process CPU time or wall)."""
    import time

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cpu_time and torch.get_num_threads() != 1:
        p.error("--cpu-time measures one thread: add --threads 1")
    return time.process_time if args.cpu_time else time.perf_counter
