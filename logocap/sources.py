"""Where images come from: files, folders, globs, arrays, videos and cameras.

Everything here hands out RGB uint8 arrays (H, W, 3) or raises :class:`LogocapError` with one
clear line. Conversions: grayscale is repeated to three channels, RGBA loses its alpha, 16-bit
images are scaled to 8 bits. Limits (module constants, so a user can raise them knowingly):

- ``MAX_IMAGE_PIXELS`` (100 megapixels, e.g. 10000 x 10000): larger images are refused before
  they are decoded (a file's header is read first), with their size in the message;
- ``MAX_ASPECT`` (32): the test transform scales the short side to the input size, so a 1 x 1000
  strip would become a 512 x 512000 network input; longer strips are refused.

Sources (:func:`resolve_source`): a path to an image, a folder (searched recursively for
``IMAGE_SUFFIXES``), a glob pattern, a list of paths / arrays, an array, a video path (or a
``scheme://`` stream URL) or a camera index (an int, or a string of digits that is not a file).
"""
from __future__ import annotations

import glob as _glob
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from .utils import LogocapError, single_thread_opencv, single_thread_worker

__all__ = ["IMAGE_SUFFIXES", "VIDEO_SUFFIXES", "MAX_IMAGE_PIXELS", "MAX_ASPECT", "check_image_size",
           "to_rgb_uint8", "read_image", "list_images", "ImageSource", "VideoSource",
           "resolve_source", "PreparedImages", "prepared_loader"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
MAX_IMAGE_PIXELS = 100_000_000
MAX_ASPECT = 32


# --------------------------------------------------------------------------- single images
def check_image_size(h: int, w: int, what: str = "image") -> None:
    """Refuse empty images, images over ``MAX_IMAGE_PIXELS`` and strips longer than ``MAX_ASPECT``."""
    h, w = int(h), int(w)
    if h < 1 or w < 1:
        raise LogocapError(f"{what} is empty ({w}x{h} pixels)")
    if h * w > MAX_IMAGE_PIXELS:
        raise LogocapError(f"{what} is {w}x{h} = {h * w / 1e6:.0f} megapixels, over the limit of "
                           f"{MAX_IMAGE_PIXELS / 1e6:.0f} (logocap.sources.MAX_IMAGE_PIXELS); "
                           "downscale it first")
    if max(h, w) > MAX_ASPECT * min(h, w):
        raise LogocapError(f"{what} is {w}x{h} pixels, a strip longer than {MAX_ASPECT}:1 "
                           "(logocap.sources.MAX_ASPECT): its network input would be too long")


def to_rgb_uint8(image, what: str = "image") -> np.ndarray:
    """An (H, W, 3) RGB uint8 array from RGB / RGBA / grayscale arrays of uint8, uint16 or bool.

    Shape and size are checked before any conversion work, so a huge array costs nothing.
    """
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (3, 4)):
        raise LogocapError(f"{what} must be an (H, W, 3) RGB, (H, W, 4) RGBA or (H, W) grayscale "
                           f"array, got shape {tuple(img.shape)}")
    check_image_size(img.shape[0], img.shape[1], what)
    if img.dtype == np.uint16:  # 16-bit: scale 0..65535 to 0..255 (rounded)
        img = ((img.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    elif img.dtype == np.bool_:
        img = img.astype(np.uint8) * 255
    elif img.dtype != np.uint8:
        raise LogocapError(f"{what} must be a uint8 (or uint16) array, got {img.dtype}; convert "
                           "floats in [0, 1] with (img * 255).round().astype(np.uint8)")
    if img.ndim == 2:  # grayscale: the network is trained on RGB
        img = np.repeat(img[:, :, None], 3, axis=2)
    elif img.shape[2] == 4:  # RGBA: drop the alpha channel
        img = img[:, :, :3]
    return np.ascontiguousarray(img)


@contextmanager
def _pil_unlimited():
    """PIL refuses to even open the header of images over ~179 MP; we check sizes ourselves."""
    from PIL import Image

    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield Image
    finally:
        Image.MAX_IMAGE_PIXELS = old


def _header_size(path: Path):
    """(h, w) from the file header without decoding the pixels, or None if PIL cannot tell."""
    try:
        with _pil_unlimited() as Image, Image.open(path) as im:
            w, h = im.size
    except Exception:  # not a format PIL knows (OpenCV may still read it), or corrupt
        return None
    return int(h), int(w)


def read_image(path) -> np.ndarray:
    """Read an image file as RGB uint8 (H, W, 3); one clear LogocapError for every failure.

    Missing files, folders, empty (0-byte) and undecodable files are refused; so are images over
    the size limits, checked from the header before decoding. Decoding is
    :func:`logocap.data.transforms.load_image` (OpenCV): 16-bit files are scaled to 8 bits,
    grayscale and RGBA files become RGB, EXIF orientation is applied.
    """
    p = Path(path)
    if not p.exists():
        raise LogocapError(f"image file not found: {p}")
    if p.is_dir():
        raise LogocapError(f"{p} is a folder, not an image file")
    try:
        nbytes = p.stat().st_size
    except OSError as e:
        raise LogocapError(f"cannot read {p}: {e.strerror or e}") from None
    if nbytes == 0:
        raise LogocapError(f"empty image file (0 bytes): {p}")
    hw = _header_size(p)
    if hw is not None:
        check_image_size(*hw, what=f"image {p}")
    from .data.transforms import load_image  # the one decoder (8-bit RGB, corrupt-file checks)

    img = load_image(p)
    check_image_size(img.shape[0], img.shape[1], what=f"image {p}")
    return img


def list_images(folder) -> list[Path]:
    """Image files under ``folder`` (recursive, sorted), without our own ``*.poses.*`` drawings."""
    folder = Path(folder)
    return sorted(f for f in folder.rglob("*")
                  if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                  and not f.stem.endswith(".poses"))


# --------------------------------------------------------------------------- sources
@dataclass
class ImageSource:
    """Still images: ``items`` are Paths or arrays; ``single`` when one image was given (its
    errors are raised; a collection skips bad items with a warning)."""
    items: list
    single: bool = False
    root: Path | None = None  # the folder, for a folder source
    kind: str = "images"

    def __len__(self) -> int:
        return len(self.items)


class VideoSource:
    """A video file, stream URL or camera opened with OpenCV; frames come out as RGB uint8.

    Opening reads the first frame, so a source that cannot be opened or has no frames fails here
    (LogocapError), not later. Use as a context manager or call :meth:`close`.
    """
    kind = "video"

    def __init__(self, spec):
        self.camera = isinstance(spec, int)
        self.spec = spec
        self.name = f"camera{spec}" if self.camera else str(spec)
        if not self.camera and "://" not in str(spec):
            p = Path(spec)
            if not p.exists():
                raise LogocapError(f"video file not found: {p}")
            if p.is_dir():
                raise LogocapError(f"{p} is a folder, not a video file")
            if p.stat().st_size == 0:
                raise LogocapError(f"empty video file (0 bytes): {p}")
        import cv2

        with _quiet_opencv():
            self.cap = cv2.VideoCapture(int(spec) if self.camera else str(spec))
            opened = self.cap.isOpened()
            ok, frame = self.cap.read() if opened else (False, None)
        if not opened:
            self.cap.release()
            if self.camera:
                raise LogocapError(f"camera {spec} cannot be opened (no such camera, or it is busy)")
            raise LogocapError(f"cannot open video {spec} (not a video, or a codec OpenCV lacks)")
        if not ok or frame is None:
            self.cap.release()
            raise LogocapError(f"{'camera ' + str(spec) if self.camera else 'video ' + str(spec)} "
                               "gives no frames (empty or undecodable)")
        self._first = frame
        fps = float(self.cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if 0.5 <= fps <= 1000 else None  # cameras and some files do not say
        n = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.frame_count = n if n > 0 and not self.camera else None
        self.height, self.width = frame.shape[:2]

    def frames(self, every: int = 1, max_frames: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(frame index, RGB frame)`` for every ``every``-th frame, at most ``max_frames``.

        Skipped frames are only grabbed, not decoded. Frames can be read once.
        """
        import cv2

        if every < 1:
            raise LogocapError(f"every must be >= 1, got {every}")
        if max_frames is not None and max_frames < 1:
            raise LogocapError(f"max_frames must be >= 1, got {max_frames}")
        index, done = 0, 0
        frame = self._first
        self._first = None
        if frame is None:
            raise LogocapError(f"the frames of {self.name} were already read")
        while frame is not None:
            yield index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            done += 1
            if max_frames is not None and done >= max_frames:
                return
            for _ in range(every - 1):  # grab without decoding
                index += 1
                if not self.cap.grab():
                    return
            index += 1
            ok, frame = self.cap.read()
            if not ok:
                return

    def expected_frames(self, every: int = 1, max_frames: int | None = None) -> int | None:
        """How many frames :meth:`frames` will give, when the container says (None otherwise)."""
        if self.frame_count is None:
            return max_frames
        n = (self.frame_count + every - 1) // every
        return min(n, max_frames) if max_frames else n

    def close(self) -> None:
        self.cap.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@contextmanager
def _quiet_opencv():
    """OpenCV prints WARN lines for absent cameras; our own error says it in one line."""
    import cv2

    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is None:
        yield
        return
    old = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_ERROR)
    try:
        yield
    finally:
        logging.setLogLevel(old)


def _is_glob(s: str) -> bool:
    return any(c in s for c in "*?[")


def _expand_path(s: str | Path, single_ok: bool) -> tuple[list[Path], Path | None, bool]:
    """One path-like -> (image paths, folder root or None, is-a-single-image)."""
    p = Path(s)
    if p.is_dir():
        files = list_images(p)
        if not files:
            raise LogocapError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in folder {p}")
        return files, p, False
    if p.exists() or not _is_glob(str(s)):
        return [p], None, single_ok  # missing files fail when read, with the file's name
    files = sorted(Path(f) for f in _glob.glob(str(s), recursive=True)
                   if Path(f).is_file() and Path(f).suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise LogocapError(f"no image files match {s}")
    return files, None, False


def resolve_source(source) -> ImageSource | VideoSource:
    """Turn any accepted source into an :class:`ImageSource` or an opened :class:`VideoSource`."""
    if isinstance(source, (ImageSource, VideoSource)):
        return source
    if isinstance(source, bool):
        raise LogocapError(f"not an image source: {source!r}")
    if isinstance(source, (int, np.integer)):
        return VideoSource(int(source))
    if isinstance(source, np.ndarray):
        if source.ndim == 4:  # a stack of images
            return ImageSource(list(source))
        return ImageSource([source], single=True)
    if isinstance(source, (str, os.PathLike)):
        s = os.fspath(source)
        p = Path(s)
        if "://" in s:
            return VideoSource(s)
        if p.suffix.lower() in VIDEO_SUFFIXES and not _is_glob(s):
            return VideoSource(s)
        if s.isdigit() and not p.exists():
            return VideoSource(int(s))
        if not p.exists() and not _is_glob(s):
            raise LogocapError(f"no such file or folder: {s}")
        files, root, single = _expand_path(s, single_ok=True)
        return ImageSource(files, single=single, root=root)
    if isinstance(source, (list, tuple)):
        items: list = []
        for s in source:
            if isinstance(s, np.ndarray):
                items.append(s)
            elif isinstance(s, (str, os.PathLike)):
                if Path(s).suffix.lower() in VIDEO_SUFFIXES:
                    raise LogocapError(f"a list source holds images only; pass the video {s} alone")
                items += _expand_path(s, single_ok=False)[0]
            else:
                raise LogocapError(f"a list source holds paths or arrays, got {type(s).__name__}")
        if not items:
            raise LogocapError("the source list is empty")
        return ImageSource(items)
    try:  # a torch tensor (H, W, 3) or a PIL image
        arr = np.asarray(source)
    except Exception:
        arr = None
    if arr is not None and arr.ndim in (2, 3) and arr.dtype != object:
        return ImageSource([arr], single=True)
    raise LogocapError(f"not an image source: {type(source).__name__} (give a path, folder, glob, "
                       "list, numpy image, video path or camera index)")


# --------------------------------------------------------------------------- DataLoader
@dataclass
class PreparedImages:
    """A Dataset of image files read and prepared (warped, normalised) in DataLoader workers.

    ``prepare``: a picklable function ``rgb -> (tensor, affine, (h, w))`` (e.g.
    ``functools.partial(predict.prepare_image, input_size=...)``). Items are dicts with
    ``index``, ``path``, and either ``tensor``/``affine``/``size`` or ``error`` (a bad file never
    stops the loader). ``keep_image`` also returns the RGB image (for drawings).
    """
    paths: list
    prepare: object
    keep_image: bool = False

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        path = self.paths[i]
        item = {"index": i, "path": path}
        try:
            img = read_image(path) if not isinstance(path, np.ndarray) else path
            item["tensor"], item["affine"], item["size"] = self.prepare(img)
            if self.keep_image:
                item["image"] = img
        except LogocapError as e:
            item["error"] = str(e)
        return item


def _as_list(batch):
    return batch


def prepared_loader(dataset: PreparedImages, batch_size: int = 1, workers: int = 0):
    """A DataLoader over ``dataset`` yielding lists of item dicts (no padding, no stacking)."""
    from torch.utils.data import DataLoader

    if workers < 0:
        raise LogocapError(f"workers must be >= 0, got {workers}")
    if workers:
        single_thread_opencv()  # before the workers are forked (see utils.single_thread_worker)
    return DataLoader(dataset, batch_size=max(1, int(batch_size)), shuffle=False,
                      num_workers=int(workers), collate_fn=_as_list,
                      # decode in parallel processes, not parallel threads per process
                      worker_init_fn=single_thread_worker if workers else None,
                      persistent_workers=False, prefetch_factor=2 if workers else None)
