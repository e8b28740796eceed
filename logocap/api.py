"""The Python API: ``model = logocap.load(...)``; ``results = model(source)``.

::

    import logocap
    model = logocap.load("runs/demo/last.pth")                        # a logocap checkpoint
    model = logocap.load("logocap_hrnet_w32", weights="w32.pth", device="cuda", batch=8)
    for poses in model("street.mp4"):                                  # a generator for videos
        print(poses.frame_index, len(poses), poses.scores)
    results = model("photos/")                                         # a list for images
    results[0].plot(save="first.jpg")

Sources (see :func:`logocap.sources.resolve_source`): an image path, a folder, a glob, a list of
paths / arrays, an RGB array (H, W, 3) or a stack (B, H, W, 3), a video path or URL, a camera
index. Images come back as a list of :class:`logocap.Poses` in source order; videos and cameras
as a generator (constant memory: frames are read, predicted and handed out ``batch`` at a time).
``stream=True`` / ``False`` chooses either way for any source.

Batching: ``batch`` images go through the network together. Images whose network inputs differ in
shape go through separate passes, never padding (padding would change the results), so the
results do not depend on ``batch``. ``workers > 0`` reads and prepares image files in DataLoader
worker processes.

Errors: a single image that cannot be used raises :class:`logocap.utils.LogocapError`; in a
collection (folder, glob, list) a bad item is skipped with a warning and listed in
``model.skipped`` (``errors="raise"`` raises instead).
"""
from __future__ import annotations

import functools
import time
import warnings
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch

from .predict import Predictor, default_input_size, prepare_image
from .sources import ImageSource, PreparedImages, VideoSource, prepared_loader, resolve_source
from .structures import Poses
from .utils import LogocapError

__all__ = ["load", "PoseModel", "iter_poses"]


def _check_device(device) -> torch.device:
    try:
        dev = torch.device(device)
        torch.empty(1, device=dev)
    except Exception as e:  # bad names, CUDA missing: assorted exception types
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise LogocapError(f"device {device!r} cannot be used on this machine: {first[:150]}") from None
    return dev


def load(model: str | Path, weights: str | Path | None = None, device: str = "cpu", *,
         batch: int = 1, workers: int = 0, input_size: int | None = None, meta=None,
         backend: str | None = None, onnx: str | Path | None = None, **test_options) -> "PoseModel":
    """A ready-to-call pose model.

    - ``load("run/last.pth")``: a logocap checkpoint (model, keypoints and test settings inside);
    - ``load("logocap_hrnet_w32", weights="file.pth")``: a registered model name and its weights
      (a logocap checkpoint or a plain state_dict such as the released files);
    - ``load("logocap_hrnet_tiny")``: random weights (a warning says so), for trying things out;
    - ``load("run/last.onnx")`` or ``load("run/last.pth", backend="onnxruntime")``: the network
      exported by ``logocap export`` (``<weights>.onnx``, or ``onnx=FILE``) on ONNX Runtime, with
      the same torch decoding (``pip install logocap[export]``).

    ``input_size`` (multiple of 64), ``meta`` (plain state_dicts only) and test options
    (``flip=False``, ``max_people=...``, any key of ``config.DEFAULTS["test"]``) override the
    checkpoint's own settings. ``batch`` / ``workers``: defaults for every call.
    ``precision="bf16"`` (test option ``precision``, default "fp32"): the network and LOGO-CAP's
    CMP under bfloat16 autocast, decoding in fp32 (fast on CPUs with AMX / AVX512-BF16);
    ``impl="reference"``: the plain unfolded NCHW network (the speed benchmark's baseline).
    """
    from .models import list_models

    dev = _check_device(device)
    overrides = dict(test_options)
    if input_size is not None:
        overrides["input_size"] = input_size
    from .onnx_backend import choose_backend

    file = weights if weights is not None else (model if Path(model).is_file() else None)
    if choose_backend(backend, onnx, file) == "onnxruntime":
        from .onnx_backend import load_predictor, resolve_onnx_path
        predictor = load_predictor(resolve_onnx_path(file, onnx), dev, meta=meta, **overrides)
    elif weights is not None:
        predictor = Predictor.from_checkpoint(weights, str(model), dev, meta=meta, **overrides)
    elif Path(model).is_file():
        predictor = Predictor.from_checkpoint(model, None, dev, meta=meta, **overrides)
    elif str(model) in list_models():
        from .config import DEFAULTS
        from .meta import get_meta
        from .models import create_model

        kp_meta = get_meta(meta or "coco")
        unknown = [k for k in test_options if k not in DEFAULTS["test"] and k != "flip_shift"]
        if unknown:
            raise LogocapError(f"unknown test option(s) {', '.join(unknown)}")
        warnings.warn(f"logocap.load('{model}') without weights: the network is randomly "
                      "initialised and its poses are meaningless", stacklevel=2)
        net = create_model(str(model), num_keypoints=kp_meta.num_keypoints)
        predictor = Predictor(net, kp_meta, input_size or default_input_size(str(model)),
                              test_options, dev, owns_model=True)
    else:
        raise LogocapError(f"'{model}' is neither a checkpoint file nor a model name; known models: "
                           f"{', '.join(list_models())}")
    return PoseModel(predictor, batch=batch, workers=workers)


class PoseModel:
    """A :class:`logocap.predict.Predictor` that takes any source; made by :func:`load`."""

    def __init__(self, predictor: Predictor, batch: int = 1, workers: int = 0):
        self.predictor = predictor
        self.batch = _positive(batch, "batch")
        self.workers = _workers(workers)
        self.skipped: list[tuple[str, str]] = []  # (item, reason) of the last call

    # ------------------------------------------------------------------ properties
    @property
    def meta(self):
        return self.predictor.meta

    @property
    def device(self) -> torch.device:
        return self.predictor.device

    @property
    def input_size(self) -> int:
        return self.predictor.input_size

    @property
    def name(self) -> str:
        return getattr(self.predictor.model, "model_name", type(self.predictor.model).__name__)

    def __repr__(self) -> str:
        return (f"PoseModel({self.name}, keypoints={self.meta.name}, input_size={self.input_size}, "
                f"device={self.device}, batch={self.batch})")

    # ------------------------------------------------------------------ prediction
    def __call__(self, source, *, stream: bool | None = None, batch: int | None = None,
                 workers: int | None = None, every: int = 1, max_frames: int | None = None,
                 keep_images: bool | None = None, errors: str = "skip"):
        """Poses for every image or frame of ``source``: a list, or a generator when streaming.

        ``every`` / ``max_frames``: video only (every N-th frame, at most this many frames).
        ``keep_images``: keep each image on its Poses (``.image``) so that ``.plot()`` needs no
        re-reading; default on for arrays and streamed video frames, off for files.
        The source is opened here, so a missing file or camera raises at once, not on the first
        ``next()``.
        """
        if errors not in ("skip", "raise"):
            raise LogocapError(f"errors must be 'skip' or 'raise', got {errors!r}")
        batch = self.batch if batch is None else _positive(batch, "batch")
        workers = self.workers if workers is None else _workers(workers)
        every = _positive(every, "every")
        if max_frames is not None:
            max_frames = _positive(max_frames, "max_frames")
        src = resolve_source(source)
        self.skipped = []
        if isinstance(src, VideoSource):
            streaming = True if stream is None else bool(stream)
            keep = streaming if keep_images is None else bool(keep_images)
            gen = self._video(src, src.frames(every, max_frames), batch, keep)
        else:
            streaming = bool(stream)
            gen = self._images(src, batch, workers, keep_images, errors)
        return gen if streaming else list(gen)

    predict = __call__

    def stream(self, source, **kw) -> Iterator[Poses]:
        """Like calling the model with ``stream=True``: a generator of :class:`Poses`."""
        return self(source, stream=True, **kw)

    def _video(self, src: VideoSource, frames, batch: int, keep: bool) -> Iterator[Poses]:
        def items():
            for index, frame in frames:
                t0 = time.perf_counter()
                tensor, affine, size = self.predictor.prepare(frame)
                yield {"index": index, "frame_index": index, "path": src.name, "tensor": tensor,
                       "affine": affine, "size": size, "image": frame if keep else None,
                       "prepare_ms": 1000 * (time.perf_counter() - t0)}
        try:
            yield from iter_poses(self.predictor, items(), batch)
        finally:
            src.close()

    def _images(self, src: ImageSource, batch: int, workers: int, keep_images, errors: str):
        prepare = functools.partial(prepare_image, input_size=self.input_size,
                                    mean=self.predictor.mean.view(-1).tolist(),
                                    std=self.predictor.std.view(-1).tolist())
        arrays = any(isinstance(x, np.ndarray) for x in src.items)
        keep = arrays if keep_images is None else bool(keep_images)
        dataset = PreparedImages(src.items, prepare, keep_image=keep)
        if workers and not arrays:
            loader = prepared_loader(dataset, batch, workers)
            items = (item for chunk in loader for item in chunk)
        else:
            items = (dataset[i] for i in range(len(dataset)))

        def checked():
            for item in items:
                if "error" in item:
                    if errors == "raise" or src.single:
                        raise LogocapError(item["error"])
                    name = str(item["path"]) if not isinstance(item["path"], np.ndarray) else \
                        f"array {item['index']}"
                    self.skipped.append((name, item["error"]))
                    warnings.warn(f"skipped: {item['error']}", stacklevel=3)
                    continue
                if isinstance(item["path"], np.ndarray):
                    item["path"] = None
                yield item
        yield from iter_poses(self.predictor, checked(), batch)


def _positive(v, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise LogocapError(f"{what} must be a positive integer, got {v!r}")
    return int(v)


def _workers(v) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
        raise LogocapError(f"workers must be an integer >= 0, got {v!r}")
    return int(v)


def iter_poses(predictor: Predictor, items: Iterable[dict], batch: int,
               window: int | None = None) -> Iterator[Poses]:
    """Prepared items -> :class:`Poses`, in item order.

    ``items``: dicts with ``tensor``, ``affine``, ``size`` (from :meth:`Predictor.prepare`) and
    optionally ``path``, ``frame_index``, ``image``, ``prepare_ms``. Items are taken ``window``
    (default ``batch``) at a time; within a window, same-shape items share forward passes of up
    to ``batch`` images (different shapes never share one: no padding). Each Poses gets
    ``speed = {"inference": ms per image, "batch": images in its pass}``.
    """
    window = max(int(window or batch), 1)
    chunk: list[dict] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= window:
            yield from _predict_chunk(predictor, chunk, batch)
            chunk = []
    if chunk:
        yield from _predict_chunk(predictor, chunk, batch)


def _predict_chunk(predictor: Predictor, chunk: list[dict], batch: int) -> list[Poses]:
    groups: dict[tuple, list[int]] = {}
    for i, item in enumerate(chunk):
        groups.setdefault(tuple(item["tensor"].shape), []).append(i)
    out: list[Poses | None] = [None] * len(chunk)
    for idx in groups.values():
        for start in range(0, len(idx), batch):
            part = idx[start:start + batch]
            t0 = time.perf_counter()
            res = predictor.predict_prepared([chunk[i]["tensor"] for i in part],
                                             [chunk[i]["affine"] for i in part],
                                             [chunk[i]["size"] for i in part])
            ms = 1000 * (time.perf_counter() - t0) / len(part)
            for i, poses in zip(part, res):
                item = chunk[i]
                poses.path = None if item.get("path") is None else str(item["path"])
                poses.frame_index = item.get("frame_index")
                poses.image = item.get("image")
                poses.speed = {"inference": ms, "batch": len(part)}
                if "prepare_ms" in item:
                    poses.speed["preprocess"] = item["prepare_ms"]
                out[i] = poses
    return out
