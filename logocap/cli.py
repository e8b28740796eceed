"""The ``logocap`` command line: a set of verbs, each in ``logocap/commands/<verb>.py``.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
User errors (:class:`logocap.utils.LogocapError`, missing files, bad json) print one line and exit 2.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from .utils import LogocapError

# verb -> module under logocap.commands (imported lazily so `logocap --help` is fast)
COMMANDS = {
    "synth": "synth",
    "train": "train",
    "eval": "eval",
    "predict": "predict",
    "video": "video",
    "upper-bound": "upper_bound",
    "rescore-train": "rescore_train",
    "bench": "bench",
    "demo": "demo",
    "export": "export",
}


def _available():
    for verb, mod in COMMANDS.items():
        try:
            yield verb, importlib.import_module(f"logocap.commands.{mod}")
        except ModuleNotFoundError as e:
            if e.name == f"logocap.commands.{mod}":
                continue  # verb not built yet: not listed, never a placeholder
            raise


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="logocap",
        description="Bottom-up multi-person pose estimation (LOGO-CAP and friends).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    from . import __version__
    p.add_argument("--version", action="version", version=f"logocap {__version__}")
    sub = p.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    for verb, mod in _available():
        sp = sub.add_parser(verb, help=mod.HELP, description=mod.HELP,
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        mod.add_arguments(sp)
        if "threads" not in {a.dest for a in sp._actions}:
            sp.add_argument("--threads", type=int, default=None,
                            help="CPU threads for torch in this process (default: one per core; "
                                 "data-loader workers always use one each)")
        sp.set_defaults(_run=mod.run)
    return p


def _set_threads(n) -> None:
    if n is None:
        return
    if n < 1:
        raise LogocapError(f"--threads must be >= 1, got {n}")
    import torch
    torch.set_num_threads(int(n))


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _set_threads(getattr(args, "threads", None))
        rc = args._run(args)
    except LogocapError as e:
        print(f"logocap {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"logocap {args.verb}: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
