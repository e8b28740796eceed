"""Top-down training data: one sample per annotated person, cropped with its ground-truth box.

The json is read, checked and indexed by :class:`~logocap.data.coco.CocoPoseDataset` (same rules,
same messages); this class lists the people (non-crowd, ``num_keypoints`` > 0, bbox of positive
size) and crops each one as the predictor does (``codecs.topdown``: aspect 3:4, padding 1.25,
the same ``grid_sample`` sampler), with the augmentation of ``random_affine`` expressed per box:

- scale s ~ U[min_scale, max_scale]: the region is the padded box / s (s > 1 zooms in);
- rotation ~ U[-max_rotation, max_rotation] degrees about the box centre;
- the centre moves by up to ``max_translate / 200`` of the region per axis;
- horizontal flip with probability ``flip_prob`` (joints reordered with ``meta.flip_index``).

Sample dict: ``image`` [3, H, W] (normalised), ``keypoints`` [K, 2] float32 (crop px),
``keypoint_weights`` [K] (1 = labelled and inside the crop, else 0), ``heatmaps`` [K, H/4, W/4]
(the auxiliary Gaussian targets, sigma = 2 map px per 64 map rows: 2 at 256x192, 3 at 384x288,
as the released configs; centred at the exact sub-pixel joint), ``affine`` [2, 3] (original ->
crop px), ``image_id``, ``flipped``. Augmentation is a function of (seed, epoch, index).
"""
from __future__ import annotations

import numpy as np
import torch

from ..codecs.topdown import box_to_crop, crop_affines, crop_images, crop_size
from ..utils import LogocapError
from .coco import CocoPoseDataset
from .transforms import MEAN, STD, apply_affine, load_image

__all__ = ["TopDownPoseDataset", "collate_topdown", "heatmap_targets"]

STRIDE = 4


def heatmap_targets(keypoints: np.ndarray, weights: np.ndarray, map_hw, stride: int = STRIDE,
                    sigma: float | None = None) -> np.ndarray:
    """[K, h, w] float32 Gaussians at ``keypoints`` / stride (crop px -> map px); zero channels
    where ``weights`` is 0. ``sigma`` in map px, default 2 * h / 64."""
    h, w = int(map_hw[0]), int(map_hw[1])
    sigma = 2.0 * h / 64.0 if sigma is None else float(sigma)
    c = np.asarray(keypoints, np.float64) / stride  # [K, 2]
    xs = np.arange(w, dtype=np.float64)[None, None, :]
    ys = np.arange(h, dtype=np.float64)[None, :, None]
    g = np.exp(-((xs - c[:, 0, None, None]) ** 2 + (ys - c[:, 1, None, None]) ** 2)
               / (2.0 * sigma ** 2))
    return (g * (np.asarray(weights) > 0)[:, None, None]).astype(np.float32)


def collate_topdown(samples: list[dict]) -> dict:
    """Stack the tensors; ``image_id`` a list, ``flipped`` a bool tensor."""
    out = {k: torch.stack([s[k] for s in samples]) for k in
           ("image", "keypoints", "keypoint_weights", "heatmaps", "affine")}
    out.update({"image_id": [s["image_id"] for s in samples],
                "flipped": torch.tensor([bool(s["flipped"]) for s in samples]),
                "skipped_images": [m for s in samples for m in s.get("skipped_images", ())]})
    return out


class TopDownPoseDataset(torch.utils.data.Dataset):
    """Person crops of a COCO-format keypoint json (see the module doc).

    ``input_size``: the crop height (width = 3/4 of it) or (h, w).
    """

    MAX_SUBSTITUTES = 10

    def __init__(self, ann_file, image_dir, meta=None, input_size=256, max_rotation: float = 30.0,
                 min_scale: float = 0.75, max_scale: float = 1.5, max_translate: float = 40.0,
                 flip_prob: float = 0.5, sigma: float | None = None, max_images: int | None = None,
                 seed: int = 0):
        self.crop_hw = crop_size(input_size)
        if not (0 < min_scale <= max_scale):
            raise LogocapError(f"need 0 < min_scale <= max_scale, got {min_scale}, {max_scale}")
        self.base = CocoPoseDataset(ann_file, image_dir, meta=meta, mode="train",
                                    input_size=self.crop_hw[0], max_images=max_images)
        self.meta, self.coco = self.base.meta, self.base.coco
        self.aug = dict(max_rotation=float(max_rotation), min_scale=float(min_scale),
                        max_scale=float(max_scale), max_translate=float(max_translate),
                        flip_prob=float(flip_prob))
        self.sigma = sigma
        self.seed, self.epoch = int(seed), 0
        k = self.meta.num_keypoints
        self.people = []  # (image_id, bbox xywh [4], keypoints [K, 3])
        for iid in self.base.image_ids:
            for a in self.base.gt_annotations(iid):
                bbox = a.get("bbox")
                if a.get("iscrowd", 0) or CocoPoseDataset._num_kpts(a) == 0 or not bbox \
                        or len(bbox) != 4 or not (bbox[2] > 0 and bbox[3] > 0):
                    continue
                kp = np.asarray(a["keypoints"], np.float64).reshape(k, 3)
                self.people.append((iid, np.asarray(bbox, np.float64), kp))

    # ------------------------------------------------------------------ image list (train loop)
    @property
    def image_ids(self) -> list:
        return list(dict.fromkeys(p[0] for p in self.people))

    @image_ids.setter
    def image_ids(self, ids) -> None:  # the training loop drops unreadable images this way
        keep = set(ids)
        self.people = [p for p in self.people if p[0] in keep]
        self.base.image_ids = [i for i in self.base.image_ids if i in keep]

    def image_path(self, image_id):
        return self.base.image_path(image_id)

    def check_images(self, decode: bool = False):
        return self.base.check_images(decode)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.people)

    collate_fn = staticmethod(collate_topdown)  # the training loop batches with this

    # ------------------------------------------------------------------ samples
    def crop_affine(self, bbox, rng: np.random.Generator | None = None):
        """(affine [2, 3] original -> crop px, flipped) for one box; ``rng`` None = no augmentation."""
        centre, size = box_to_crop(bbox)
        if rng is None:
            return crop_affines(centre, size, self.crop_hw)[0], False
        a = self.aug
        s = rng.uniform(a["min_scale"], a["max_scale"])
        rot = rng.uniform(-a["max_rotation"], a["max_rotation"])
        shift = rng.uniform(-1.0, 1.0, size=2) * a["max_translate"] / 200.0 * size[0]
        flipped = bool(rng.random() < a["flip_prob"])
        m = crop_affines(centre + shift, size / s, self.crop_hw, flip=np.array([flipped]),
                         rotation=np.array([rot]))[0]
        return m, flipped

    def __getitem__(self, index: int) -> dict:
        skipped = []
        n = len(self.people)
        for k in range(min(n, self.MAX_SUBSTITUTES + 1)):  # an undecodable file: the next person
            iid, bbox, kp = self.people[(index + k) % n]
            try:
                img = load_image(self.image_path(iid))
                break
            except LogocapError as e:
                skipped.append(str(e))
        else:
            raise LogocapError(f"{len(skipped)} training images in a row cannot be read, the "
                               f"first: {skipped[0]}")
        rng = np.random.default_rng([self.seed, self.epoch, index])
        m, flipped = self.crop_affine(bbox, rng)
        h, w = self.crop_hw
        img_t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float()
        crop = crop_images(img_t, m[None], self.crop_hw)[0] / 255.0
        mean = torch.tensor(MEAN).view(3, 1, 1)
        std = torch.tensor(STD).view(3, 1, 1)
        xy = apply_affine(kp[:, :2], m)
        vis = kp[:, 2] > 0
        if flipped:  # a mirrored left wrist is a right wrist
            idx = list(self.meta.flip_index)
            xy, vis = xy[idx], vis[idx]
        inside = (xy[:, 0] >= -0.5) & (xy[:, 0] < w - 0.5) & (xy[:, 1] >= -0.5) & (xy[:, 1] < h - 0.5)
        weight = (vis & inside).astype(np.float32)
        xy = np.where(weight[:, None] > 0, xy, 0.0)
        heat = heatmap_targets(xy, weight, (h // STRIDE, w // STRIDE), STRIDE, self.sigma)
        return {"image": (crop - mean) / std,
                "keypoints": torch.from_numpy(xy.astype(np.float32)),
                "keypoint_weights": torch.from_numpy(weight),
                "heatmaps": torch.from_numpy(heat),
                "affine": torch.from_numpy(m), "image_id": iid, "flipped": flipped,
                "skipped_images": skipped}
