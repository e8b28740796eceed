"""Result objects with fixed shapes.

``Poses.keypoints`` is always (N, K, 3) = (x, y, score) in original-image pixels, ``Poses.scores``
is (N,). Low-confidence joints are never dropped or zeroed: they keep their location and score.
Results of :func:`logocap.load` models also say where they come from (``path``, ``frame_index``)
and may hold the image they were computed on (``image``, video frames and arrays), so that
``.plot()`` works without reading anything again.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .meta import KeypointMeta, get_meta

__all__ = ["Poses"]


@dataclass
class Poses:
    keypoints: np.ndarray  # (N, K, 3) float32: x, y, per-joint score (original pixels)
    scores: np.ndarray  # (N,) float32
    meta: KeypointMeta = field(default=None)
    image_id: int | None = None
    image_size: tuple[int, int] | None = None  # (height, width) of the original image
    path: str | None = None  # the image or video file the poses were found in
    frame_index: int | None = None  # the frame of a video (0-based)
    image: np.ndarray | None = field(default=None, repr=False, compare=False)  # RGB uint8, if kept
    speed: dict | None = field(default=None, repr=False, compare=False)  # ms per stage, if measured

    def __post_init__(self):
        if self.meta is None:
            from .meta import COCO
            self.meta = COCO
        kp = np.asarray(self.keypoints, dtype=np.float32)
        k = self.meta.num_keypoints
        if kp.size == 0:
            kp = kp.reshape(0, k, 3)
        if kp.ndim != 3 or kp.shape[1:] != (k, 3):
            raise ValueError(f"Poses.keypoints must be (N, {k}, 3), got {kp.shape}")
        sc = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        if sc.shape[0] != kp.shape[0]:
            raise ValueError(f"Poses: {kp.shape[0]} poses but {sc.shape[0]} scores")
        self.keypoints, self.scores = kp, sc

    def __len__(self) -> int:
        return int(self.keypoints.shape[0])

    def __getitem__(self, idx) -> "Poses":
        idx = np.arange(len(self))[idx] if not isinstance(idx, np.ndarray) else idx
        idx = np.atleast_1d(idx)
        return Poses(self.keypoints[idx], self.scores[idx], self.meta, self.image_id, self.image_size,
                     self.path, self.frame_index, self.image, self.speed)

    @property
    def boxes(self) -> np.ndarray:
        """(N, 4) x0, y0, x1, y1 of each pose's keypoints."""
        if len(self) == 0:
            return np.zeros((0, 4), np.float32)
        xy = self.keypoints[..., :2]
        return np.concatenate([xy.min(1), xy.max(1)], axis=1)

    def sorted(self) -> "Poses":
        return self[np.argsort(-self.scores, kind="stable")]

    # ------------------------------------------------------------------ export
    def to_coco(self, image_id: int | None = None, category_id: int | None = None) -> list[dict]:
        """One COCO results record per person (K*3 floats in original pixels)."""
        iid = self.image_id if image_id is None else image_id
        if iid is None:
            raise ValueError("Poses.to_coco needs an image_id")
        cid = self.meta.category_id if category_id is None else category_id
        out = []
        for kp, s in zip(self.keypoints, self.scores):
            out.append({
                "image_id": int(iid),
                "category_id": int(cid),
                "keypoints": [round(float(v), 3) for v in kp.reshape(-1)],
                "score": float(s),
            })
        return out

    def to_dict(self) -> dict:
        d = {
            "image_id": self.image_id,
            "image_size": list(self.image_size) if self.image_size else None,
            "keypoint_names": list(self.meta.keypoint_names),
            "poses": [
                {"score": float(s), "keypoints": kp.astype(np.float64).round(3).tolist()}
                for kp, s in zip(self.keypoints, self.scores)
            ],
        }
        if self.path is not None:
            d["path"] = str(self.path)
        if self.frame_index is not None:
            d["frame"] = int(self.frame_index)
        return d

    def save_json(self, path: str | Path) -> None:
        from .utils import atomic_write_text
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1))

    # ------------------------------------------------------------------ drawing
    def draw(self, image: np.ndarray | None = None, threshold: float = 0.3) -> np.ndarray:
        """The poses drawn on a copy of ``image`` (RGB uint8, original resolution): skeletons
        coloured by body side, joints above ``threshold``, each person's score.

        Without ``image``: the kept image (video frames, arrays), else the file at ``path``.
        """
        from .viz import draw_poses

        if image is None:
            image = self.image
        if image is None and self.path is not None and self.frame_index is None:
            from .sources import read_image
            image = read_image(self.path)
        if image is None:
            from .utils import LogocapError
            raise LogocapError("Poses.draw needs an image: these poses keep none and have no image path")
        return draw_poses(image, self, self.meta, threshold)

    def plot(self, threshold: float = 0.3, save: str | Path | None = None) -> np.ndarray:
        """Draw on the image the poses were found in (see :meth:`draw`); ``save``: also write it."""
        out = self.draw(None, threshold)
        if save is not None:
            from .viz import save_image
            save_image(save, out)
        return out

    @classmethod
    def empty(cls, meta: KeypointMeta | str = "coco", **kw) -> "Poses":
        meta = get_meta(meta)
        return cls(np.zeros((0, meta.num_keypoints, 3), np.float32), np.zeros((0,), np.float32), meta, **kw)
