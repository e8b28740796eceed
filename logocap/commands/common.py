"""Arguments and checks shared by the verbs.

``add_weights_arguments``, ``add_test_arguments`` and ``add_device_arguments`` give the verbs
that predict (predict, video) the same flags with the same defaults and help.
``check_device`` and ``check_out`` turn a device that this machine lacks, or an output place that
cannot be written, into one clear line (LogocapError) at the start of a command, instead of a
traceback after minutes of loading or, worse, after the work is done.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..utils import LogocapError

__all__ = ["add_weights_arguments", "add_test_arguments", "add_device_arguments", "check_device",
           "check_out"]


def add_weights_arguments(p) -> None:
    """``--weights`` / ``--model``: which network to load."""
    p.add_argument("--weights", default=None, help="logocap checkpoint, or a plain state_dict "
                   "(then --model is needed); required unless --onnx is given")
    p.add_argument("--model", default=None, help="model name (required for plain state_dicts)")


def add_test_arguments(p) -> None:
    """``--size``, ``--threshold``, ``--no-flip``, ``--precision``: the test-time settings."""
    p.add_argument("--size", type=int, default=None, help="input size (short side, multiple of 64); "
                   "none = the checkpoint's, else 512 / 640 for W32 / W48")
    p.add_argument("--threshold", type=float, default=0.3, help="joint score threshold for drawing")
    p.add_argument("--no-flip", action="store_true", help="disable the flip test (faster)")
    p.add_argument("--precision", choices=["fp32", "bf16"], default=None, help="network precision "
                   "(test.precision): bf16 = bfloat16 autocast for the network and the CMP, decoding "
                   "in fp32; fast on CPUs with AMX / AVX512-BF16 (default: the checkpoint's, fp32)")


def add_device_arguments(p) -> None:
    """``--device`` and the network backend (``--backend`` / ``--onnx``)."""
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    from ..onnx_backend import add_backend_arguments
    add_backend_arguments(p)


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
