"""Small shared helpers: clear user-facing errors, JSON reading, atomic writes."""
from __future__ import annotations

import io
import json
import os
import re
import tempfile
from pathlib import Path

__all__ = ["LogocapError", "read_json", "atomic_write_text", "atomic_write_bytes", "atomic_torch_save", "machine_info",
           "cpu_flags", "native_bf16", "single_thread_worker", "single_thread_opencv"]


class LogocapError(Exception):
    """An error caused by user input. The CLI prints its message on one line and exits 2."""


def read_json(path: str | Path, what: str):
    """The content of a JSON file; LogocapError (one line) naming ``what`` ("annotation", ...)
    and ``path`` when the file is missing, unreadable or not valid JSON."""
    path = Path(path)
    if not path.is_file():
        raise LogocapError(f"{what} file not found: {path}")
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise LogocapError(f"{what} file {path} is not valid JSON: {e.msg} (line {e.lineno})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise LogocapError(f"cannot read {what} file {path}: {e}") from None


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


# the temporary names _atomic_write makes: mkstemp(prefix=".<name>.", suffix=".tmp") adds 8
# characters of [a-z0-9_]
_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def remove_stale_temporaries(folder: str | Path, recursive: bool = True) -> list[Path]:
    """Delete the temporaries a killed atomic write left in ``folder`` (``.<name>.XXXXXXXX.tmp``,
    our own pattern only; nothing else is touched) and return them. Call it only where no write
    is in flight, e.g. at the start of a run by the one process that writes there."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = folder.rglob(".*.tmp") if recursive else folder.glob(".*.tmp")
    removed = []
    for p in sorted(found):
        if _TEMP_NAME.match(p.name) and p.is_file() and not p.is_symlink():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


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


# the CPU features that decide which kernels (and which precision) run fast
_SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16",
                "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve", "bf16")


def cpu_flags() -> list[str]:
    """The CPU flags of :data:`_SPEED_FLAGS` this machine has (Linux /proc/cpuinfo; [] elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    have = set()
    for line in text.splitlines():
        if line.split(":", 1)[0].strip() in ("flags", "Features"):
            have.update(line.split(":", 1)[1].split())
            break
    return [f for f in _SPEED_FLAGS if f in have]


def native_bf16() -> str | None:
    """'AMX' or 'AVX512-BF16' when the CPU computes bfloat16 natively, else None."""
    flags = set(cpu_flags())
    if "amx_bf16" in flags:
        return "AMX"
    if "avx512_bf16" in flags:
        return "AVX512-BF16"
    return None


def single_thread_worker(worker_id: int = 0) -> None:
    """``worker_init_fn`` for data-loader workers: one torch thread each, so that workers and
    the main process never oversubscribe the cores (on a 2-core machine that made training
    steps 30-100x slower). OpenCV is made single-threaded in the parent before the workers are
    forked (:func:`single_thread_opencv`): ``cv2.setNumThreads`` inside a forked worker tries to
    stop the parent's OpenCV thread pool, which the child does not have, and hangs."""
    import torch

    torch.set_num_threads(1)


def single_thread_opencv() -> None:
    """Call in the parent before forking data-loader workers (see :func:`single_thread_worker`)."""
    import cv2

    cv2.setNumThreads(1)


def machine_info() -> dict:
    """Date, CPU, cores, torch threads, torch version and git commit: the header of every
    benchmark JSON, so results from different days and machines can be told apart."""
    import datetime as dt
    import platform
    import subprocess

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                                capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "cpu": cpu,
            "cpu_flags": cpu_flags(), "native_bf16": native_bf16(), "cores": os.cpu_count(),
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "commit": commit}
