"""Drawing poses on images, contact sheets, saving images.

Colours come from the keypoint meta (skeleton lines and joints coloured by body side). Images are
RGB uint8 throughout; cv2 only sees BGR at the moment a file is encoded.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from .meta import KeypointMeta, get_meta
from .utils import LogocapError, atomic_write_bytes

__all__ = ["draw_poses", "draw_text_box", "contact_sheet", "save_image"]

_OUTLINE = (20, 20, 20)
# joints farther than this (px) from the origin, or not finite, are not drawn: cv2 takes int32
# fixed-point coordinates, and such a joint is nowhere near the picture anyway
_MAX_COORD = 1.0e6


def _as_keypoints(poses, scores):
    """(N, K, 3) float array and per-pose scores (or None) from a Poses object or an array."""
    if hasattr(poses, "keypoints") and hasattr(poses, "scores"):
        kp = np.asarray(poses.keypoints, np.float32)
        if scores is None:
            scores = poses.scores
        return kp, scores, False
    kp = np.asarray(poses, np.float32)
    if kp.ndim == 2:
        kp = kp[None]
    if kp.size == 0:
        kp = kp.reshape(0, kp.shape[-2] if kp.ndim == 3 else 0, 3)
    return kp, scores, None


def _looks_like_gt(kp: np.ndarray) -> bool:
    """COCO ground truth has visibility flags 0/1/2 in the third column, with at least one 2."""
    v = kp[..., 2]
    return v.size > 0 and bool(np.all(np.isin(v, (0.0, 1.0, 2.0)))) and bool(np.any(v == 2.0))


def draw_poses(image: np.ndarray, poses, meta: KeypointMeta | str = "coco", threshold: float = 0.3,
               scores: Sequence[float] | None = None, thickness: int | None = None,
               gt: bool | None = None) -> np.ndarray:
    """Draw poses on a copy of ``image`` (RGB uint8) and return it; the input is never modified.

    ``poses``: a :class:`logocap.Poses` or an (N, K, 3) array. The third column is a joint score
    (drawn when > ``threshold``) or, for ground truth (``gt=True``, or auto-detected from 0/1/2
    flags), a COCO visibility flag: v=2 joints are drawn filled, v=1 (occluded) joints hollow,
    v=0 joints not at all. ``scores`` (one per pose) are written next to each pose.
    """
    meta = get_meta(meta)
    img = np.ascontiguousarray(np.array(image, dtype=np.uint8, copy=True))
    if img.ndim != 3 or img.shape[2] != 3:
        raise LogocapError(f"draw_poses needs an RGB image (H, W, 3), got shape {img.shape}")
    kp, scores, is_gt = _as_keypoints(poses, scores)
    if kp.shape[0] == 0:
        return img
    if kp.ndim != 3 or kp.shape[1:] != (meta.num_keypoints, 3):
        raise LogocapError(f"draw_poses: keypoints must be (N, {meta.num_keypoints}, 3), got {kp.shape}")
    if gt is None:
        gt = _looks_like_gt(kp) if is_gt is None else is_gt
    h, w = img.shape[:2]
    t = int(thickness) if thickness else max(1, round(min(h, w) / 200))
    radius = t + 1
    show = kp[..., 2] > 0 if gt else kp[..., 2] > threshold
    with np.errstate(invalid="ignore"):
        show &= np.all(np.abs(kp[..., :2]) <= _MAX_COORD, axis=-1)  # False for NaN / Inf too
    kp = np.where(show[..., None], kp, 0.0)  # hidden joints never reach the integer conversion
    # Sub-pixel drawing: cv2 takes fixed-point coordinates with `shift` fractional bits.
    shift = 2
    pts = np.round(kp[..., :2] * (1 << shift)).astype(np.int64)
    edge_colors = meta.skeleton_colors
    joint_colors = meta.keypoint_colors
    for n in range(kp.shape[0]):  # drawing is per person; decoding never is
        for (a, b), color in zip(meta.skeleton, edge_colors):
            if show[n, a] and show[n, b]:
                cv2.line(img, tuple(map(int, pts[n, a])), tuple(map(int, pts[n, b])), color, t,
                         cv2.LINE_AA, shift)
        for j in range(meta.num_keypoints):
            if not show[n, j]:
                continue
            c = tuple(map(int, pts[n, j]))
            hollow = gt and kp[n, j, 2] == 1.0
            if hollow:  # occluded ground-truth joint: a ring
                cv2.circle(img, c, (radius + 1) << shift, _OUTLINE, t + 1, cv2.LINE_AA, shift)
                cv2.circle(img, c, (radius + 1) << shift, joint_colors[j], t, cv2.LINE_AA, shift)
            else:
                cv2.circle(img, c, radius << shift, joint_colors[j], -1, cv2.LINE_AA, shift)
                cv2.circle(img, c, radius << shift, _OUTLINE, 1, cv2.LINE_AA, shift)
        if scores is not None and np.any(show[n]):
            xy = kp[n, show[n], :2]
            x0, y0 = int(xy[:, 0].min()), int(xy[:, 1].min()) - 2 * radius
            scale = max(0.3, min(h, w) / 800)
            _outlined_text(img, f"{float(scores[n]):.2f}", (max(0, x0), max(10, y0)), scale)
    return img


def _outlined_text(img: np.ndarray, text: str, org: tuple[int, int], scale: float,
                   color=(255, 255, 255)) -> None:
    """White text with a dark outline: readable on bright and dark backgrounds alike."""
    thick = max(1, int(round(scale * 1.5)))
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, _OUTLINE, thick + 2, cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, color, thick, cv2.LINE_AA)


def draw_text_box(image: np.ndarray, lines: Sequence[str], scale: float | None = None) -> np.ndarray:
    """Write ``lines`` in the top-left corner of ``image`` (in place, RGB uint8) on a dark box,
    e.g. the FPS / latency overlay of ``logocap video``; returns ``image``."""
    h, w = image.shape[:2]
    scale = scale or max(0.4, min(h, w) / 900)
    thick = max(1, int(round(scale * 1.5)))
    sizes = [cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)[0] for t in lines]
    pad, step = int(6 * scale) + 2, max(s[1] for s in sizes) + int(10 * scale) + 2
    box_w = max(s[0] for s in sizes) + 2 * pad
    box_h = step * len(lines) + pad
    roi = image[:min(h, box_h), :min(w, box_w)]
    roi[:] = (roi.astype(np.uint16) * 2 // 5).astype(np.uint8)  # darken, keep the picture visible
    for i, t in enumerate(lines):
        cv2.putText(image, t, (pad, step * (i + 1)), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                    thick, cv2.LINE_AA)
    return image


def contact_sheet(images: Sequence[np.ndarray], cols: int = 4, pad: int = 2,
                  fill: int = 0) -> np.ndarray:
    """Tile RGB uint8 images on a grid (row-major), each in a cell the size of the largest one."""
    if len(images) == 0:
        raise LogocapError("contact_sheet needs at least one image")
    if cols < 1:
        raise LogocapError(f"contact_sheet: cols must be >= 1, got {cols}")
    cols = min(cols, len(images))
    rows = (len(images) + cols - 1) // cols
    ch = max(im.shape[0] for im in images)
    cw = max(im.shape[1] for im in images)
    sheet = np.full((rows * ch + (rows + 1) * pad, cols * cw + (cols + 1) * pad, 3), fill, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        y, x = pad + r * (ch + pad), pad + c * (cw + pad)
        im = np.asarray(im, np.uint8)
        if im.ndim == 2:
            im = np.repeat(im[..., None], 3, axis=2)
        sheet[y:y + im.shape[0], x:x + im.shape[1]] = im[..., :3]
    return sheet


def encode_image(rgb: np.ndarray, ext: str = ".png", jpeg_quality: int = 92) -> bytes:
    """Encode an RGB uint8 image to PNG or JPEG bytes."""
    ext = ext.lower()
    if ext not in (".png", ".jpg", ".jpeg"):
        raise LogocapError(f"unsupported image format '{ext}' (use .png or .jpg)")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if ext != ".png" else []
    ok, buf = cv2.imencode(ext, cv2.cvtColor(np.asarray(rgb, np.uint8), cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise LogocapError(f"could not encode an image as {ext}")
    return buf.tobytes()


def save_image(path: str | Path, rgb: np.ndarray) -> None:
    """Write an RGB uint8 image atomically; the format follows the suffix (.png, .jpg)."""
    path = Path(path)
    atomic_write_bytes(path, encode_image(rgb, path.suffix or ".png"))
