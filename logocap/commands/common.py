"""Checks shared by the verbs, run on the arguments before any model is loaded.

``check_device`` and ``check_out`` turn a device that this machine lacks, or an output place that
cannot be written, into one clear line (LogocapError) at the start of a command, instead of a
traceback after minutes of loading or, worse, after the work is done.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..utils import LogocapError

__all__ = ["check_device", "check_out"]


def check_device(name: str | None, flag: str = "--device") -> str | None:
    """Return ``name`` if a tensor can be made on it; None / "auto" pass through unchanged."""
    if name is None or name == "auto":
        return name
    import torch

    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise LogocapError(f"{flag} {name!r} is not a torch device (e.g. cpu, cuda, cuda:1)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise LogocapError(f"{flag} {name}: CUDA is not available on this machine (use {flag} cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise LogocapError(f"{flag} {name}: this machine has {torch.cuda.device_count()} CUDA "
                               f"device(s)")
    try:
        torch.empty(1, device=dev)
    except Exception as e:  # backends raise assorted types (RuntimeError, AssertionError, ...)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise LogocapError(f"{flag} {name} cannot be used on this machine: {first[:150]}") from None
    return name


def _writable_folder(folder: Path) -> bool:
    """Whether a file can be created in ``folder`` (tried for real: permissions, read-only
    file systems and the super-user all answer truthfully); the probe file is removed."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".logocap-write-check.", dir=folder)
    except OSError:
        return False
    os.close(fd)
    os.unlink(probe)
    return True


def check_out(path, kind: str = "folder", flag: str = "--out"):
    """Check that ``path`` can be written as a ``kind`` ("folder" or "file") before any work.

    Nothing is created: the nearest existing folder on the way must be a writable folder, and
    ``path`` itself must not exist as the other kind. Returns ``path`` (None passes through).
    """
    if path is None:
        return None
    p = Path(path)
    if kind == "folder" and p.exists() and not p.is_dir():
        raise LogocapError(f"{flag} {p} is a file, not a folder")
    if kind == "file" and p.is_dir():
        raise LogocapError(f"{flag} {p} is a folder, not a file")
    parent = p if kind == "folder" else p.parent
    parent = Path(os.path.abspath(parent))
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise LogocapError(f"{flag} {p}: {parent} is a file, not a folder")
    if not _writable_folder(parent):
        raise LogocapError(f"{flag} {p}: cannot write in {parent} (permission denied or read-only)")
    return path
