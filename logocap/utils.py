"""Small shared helpers: clear user-facing errors, atomic writes."""
from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

__all__ = ["LogocapError", "atomic_write_text", "atomic_write_bytes", "atomic_torch_save"]


class LogocapError(Exception):
    """An error caused by user input. The CLI prints its message on one line and exits 2."""


def _atomic_write(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    _atomic_write(path, data)


def atomic_write_text(path: str | Path, text: str) -> None:
    _atomic_write(path, text.encode("utf-8"))


def atomic_torch_save(obj, path: str | Path) -> None:
    """torch.save to a temp file in the same folder, then rename: a crash never leaves half a file."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    _atomic_write(path, buf.getvalue())
