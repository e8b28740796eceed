"""One dataset for COCO-format keypoint json: COCO person_keypoints, OCHuman and CrowdPose.

Rules (notes 4.1):
- image ids come from the json, never from file names;
- training keeps images with at least one annotation of any kind; validation keeps them all;
- people = annotations with ``iscrowd == 0 or num_keypoints > 0``;
- the ignore mask (0 in the heatmap weights) covers crowd regions and people without keypoints
  (RLE or polygon segmentation; the bbox when there is none) and, after warping, everything
  outside the image (as the official code);
- ``area`` (segmentation area) is kept for the offset weights and OKS; if missing, the bbox area.
The keypoint meta comes from the json's category (``meta_from_coco_category``) unless given.
"""
from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO as CocoApi

from ..codecs.targets import box_diagonal_area, encode_targets, keypoint_box_area
from ..meta import KeypointMeta, get_meta, meta_from_coco_category
from ..utils import LogocapError, read_json
from .transforms import (affine_scale, apply_affine, load_image, normalize, output_affine,
                         random_affine, test_transform, warp_image)

__all__ = ["CocoPoseDataset", "collate_train", "collate_val", "load_coco_json"]

STRIDE = 4  # output maps are 1/4 of the input
HEATMAP_WEIGHTS = ("shared", "per_channel")  # one weight map for all channels | DEKR's per channel
OFFSET_AREAS = ("segmentation", "keypoint_box", "instance_box")  # offset-weight area: ann area
# | DEKR's quirk | box H^2 + W^2 (HGR, Eqn. 5)


def load_coco_json(ann_file) -> dict:
    """Read and sanity-check a COCO keypoint json; LogocapError (one line) if unusable."""
    path = Path(ann_file)
    data = read_json(path, "annotation")
    if not isinstance(data, dict):
        raise LogocapError(f"annotation file {path} must hold a JSON object")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise LogocapError(f"annotation file {path} has no '{key}' list")
    return data


def _keypoint_category(data: dict, path) -> dict:
    for cat in data["categories"]:
        if isinstance(cat, dict) and cat.get("keypoints"):
            return cat
    raise LogocapError(f"annotation file {path}: no category has a 'keypoints' list")


class CocoPoseDataset(torch.utils.data.Dataset):
    """COCO-format keypoint dataset; samples as in docs/DESIGN.md (``mode`` train or val).

    Train samples are reproducible: sample ``index`` of epoch ``e`` draws its augmentation from
    ``np.random.default_rng([seed, e, index])`` (call :meth:`set_epoch` each epoch), so DDP ranks
    and resumed runs see the same crops whatever the worker layout.
    """

    def __init__(self, ann_file, image_dir, meta: KeypointMeta | str | None = None,
                 mode: str = "train", input_size: int = 512, max_rotation: float = 30.0,
                 min_scale: float = 0.75, max_scale: float = 1.5, max_translate: float = 40.0,
                 flip_prob: float = 0.5, sigma: float = 2.0, center_sigma: float = 4.0,
                 bg_weight: float = 0.1, offset_radius: int = 4,
                 min_center_area: float = 32.0 ** 2, max_images: int | None = None, seed: int = 0,
                 heatmap_weights: str = "shared", offset_area: str = "segmentation"):
        if mode not in ("train", "val"):
            raise LogocapError(f"dataset mode must be 'train' or 'val', got {mode!r}")
        if int(input_size) <= 0 or int(input_size) % 32:
            raise LogocapError(f"input_size must be a positive multiple of 32, got {input_size}")
        if not (0 < min_scale <= max_scale):
            raise LogocapError(f"need 0 < min_scale <= max_scale, got {min_scale}, {max_scale}")
        self.ann_file, self.image_dir = Path(ann_file), Path(image_dir)
        if not self.image_dir.is_dir():
            raise LogocapError(f"image folder not found: {self.image_dir}")
        self.mode, self.input_size = mode, int(input_size)
        self.aug = dict(max_rotation=max_rotation, min_scale=min_scale, max_scale=max_scale,
                        max_translate=max_translate, flip_prob=flip_prob)
        # target variants (DEKR, notes 10.2): per-channel heatmap weights, keypoint-box area
        if heatmap_weights not in HEATMAP_WEIGHTS:
            raise LogocapError(f"heatmap_weights must be one of {', '.join(HEATMAP_WEIGHTS)}, "
                               f"got {heatmap_weights!r}")
        if offset_area not in OFFSET_AREAS:
            raise LogocapError(f"offset_area must be one of {', '.join(OFFSET_AREAS)}, "
                               f"got {offset_area!r}")
        self.offset_area = offset_area
        self.target_args = dict(sigma=sigma, center_sigma=center_sigma, bg_weight=bg_weight,
                                radius=int(offset_radius), min_center_area=min_center_area,
                                per_channel_weights=heatmap_weights == "per_channel")
        self.seed, self.epoch = int(seed), 0

        data = load_coco_json(self.ann_file)
        category = _keypoint_category(data, self.ann_file)
        try:
            json_meta = meta_from_coco_category(category)
        except ValueError as e:
            raise LogocapError(f"annotation file {self.ann_file}: {e}") from None
        try:
            self.meta = get_meta(meta) if meta is not None else json_meta
        except ValueError as e:
            raise LogocapError(str(e)) from None
        if self.meta.num_keypoints != json_meta.num_keypoints:
            raise LogocapError(
                f"keypoint set '{self.meta.name}' has {self.meta.num_keypoints} keypoints but "
                f"{self.ann_file} has {json_meta.num_keypoints}")
        self.category_id = category.get("id", self.meta.category_id)
        self._check_annotations(data)

        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            self.coco = CocoApi()
            self.coco.dataset = data
            self.coco.createIndex()

        ids = [img["id"] for img in data["images"]]
        if mode == "train":
            ids = [i for i in ids if self.coco.getAnnIds(imgIds=[i], iscrowd=None)]
        self.image_ids = ids[:max_images] if max_images is not None else ids

    def _check_annotations(self, data):
        n = 3 * self.meta.num_keypoints
        image_ids = set()
        for img in data["images"]:
            if not isinstance(img, dict) or "id" not in img or "file_name" not in img:
                raise LogocapError(f"annotation file {self.ann_file}: an image entry lacks 'id' "
                                   f"or 'file_name'")
            image_ids.add(img["id"])
        for ann in data["annotations"]:
            if not isinstance(ann, dict) or "image_id" not in ann:
                raise LogocapError(f"annotation file {self.ann_file}: an annotation lacks 'image_id'")
            if ann.get("category_id", self.category_id) != self.category_id:
                continue
            if "keypoints" not in ann:  # as evaluation refuses it (evaluation._check_gt)
                raise LogocapError(f"annotation file {self.ann_file}: annotation id "
                                   f"{ann.get('id', '?')} lacks keypoints")
            kps = ann["keypoints"]
            if not isinstance(kps, list) or len(kps) != n:
                raise LogocapError(f"annotation file {self.ann_file}: annotation {ann.get('id')} "
                                   f"has {len(kps) if isinstance(kps, list) else '?'} keypoint "
                                   f"values, expected {n}")
            bad = [v for v in kps if isinstance(v, bool) or not isinstance(v, (int, float))
                   or not np.isfinite(v)]
            if bad:
                raise LogocapError(f"annotation file {self.ann_file}: annotation id {ann.get('id', '?')} "
                                   f"has a non-numeric or non-finite keypoint value ({bad[0]!r})")
            if ann["image_id"] not in image_ids:
                raise LogocapError(f"annotation file {self.ann_file}: annotation {ann.get('id')} "
                                   f"names unknown image {ann['image_id']!r}")

    # ------------------------------------------------------------------ public helpers
    def __len__(self) -> int:
        return len(self.image_ids)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def image_path(self, image_id) -> Path:
        return self.image_dir / self.coco.imgs[image_id]["file_name"]

    def gt_annotations(self, image_id) -> list[dict]:
        """The json annotations of the keypoint category for one image (crowd included)."""
        ids = self.coco.getAnnIds(imgIds=[image_id], catIds=[self.category_id], iscrowd=None)
        return self.coco.loadAnns(ids)

    def check_images(self, decode: bool = False) -> list[tuple[str, str]]:
        """List ``(path, reason)`` for missing or unreadable images.

        Quick by default (existence + ``cv2.haveImageReader``, which reads the file signature);
        ``decode=True`` decodes every image and also finds truncated files.
        """
        bad = []
        for image_id in self.image_ids:
            p = self.image_path(image_id)
            if not p.is_file():
                bad.append((str(p), "missing"))
            elif not cv2.haveImageReader(str(p)):
                bad.append((str(p), "not a readable image"))
            elif decode and cv2.imread(str(p), cv2.IMREAD_UNCHANGED) is None:
                bad.append((str(p), "corrupt"))
        return bad

    # ------------------------------------------------------------------ annotations -> arrays
    def _people(self, anns):
        """Keypoints [M, K, 3], areas [M], boxes [M, 4] (x0, y0, x1, y1) of the kept people."""
        K = self.meta.num_keypoints
        kept = [a for a in anns if not a.get("iscrowd", 0) or self._num_kpts(a) > 0]
        kps = np.zeros((len(kept), K, 3), np.float64)
        areas = np.zeros(len(kept), np.float64)
        boxes = np.zeros((len(kept), 4), np.float64)
        for m, a in enumerate(kept):
            kps[m] = np.asarray(a.get("keypoints", [0] * 3 * K), np.float64).reshape(K, 3)
            if a.get("bbox") and len(a["bbox"]) == 4:
                x, y, bw, bh = a["bbox"]
                boxes[m] = (x, y, x + bw, y + bh)
            areas[m] = a["area"] if a.get("area") else (boxes[m, 2] - boxes[m, 0]) * (
                boxes[m, 3] - boxes[m, 1])
        return kps, areas, boxes

    @staticmethod
    def _num_kpts(ann) -> int:
        if "num_keypoints" in ann:
            return int(ann["num_keypoints"])
        return int((np.asarray(ann.get("keypoints", [0, 0, 0])).reshape(-1, 3)[:, 2] > 0).sum())

    def _ignore_mask(self, anns, h: int, w: int) -> np.ndarray:
        """uint8 [h, w]: 1 = use, 0 = crowd region or person without keypoints."""
        keep = np.ones((h, w), np.uint8)
        for a in anns:
            if not (a.get("iscrowd", 0) or self._num_kpts(a) == 0):
                continue
            seg = a.get("segmentation")
            m = None
            if seg:
                try:
                    if isinstance(seg, list):  # polygons
                        rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
                    elif isinstance(seg.get("counts"), list):  # uncompressed RLE
                        rle = mask_utils.frPyObjects(seg, *seg["size"])
                    else:  # compressed RLE
                        rle = seg
                    with warnings.catch_warnings():  # pycocotools vs numpy 2 deprecation noise
                        warnings.simplefilter("ignore", DeprecationWarning)
                        m = mask_utils.decode(rle)
                except Exception as e:  # pycocotools raises assorted types on bad input
                    raise LogocapError(f"annotation {a.get('id')} in {self.ann_file}: bad "
                                       f"segmentation ({type(e).__name__})") from None
                if m.shape != (h, w):
                    m = cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST)
            elif a.get("bbox") and len(a["bbox"]) == 4:
                x, y, bw, bh = a["bbox"]
                m = np.zeros((h, w), np.uint8)
                m[max(int(y), 0):int(np.ceil(y + bh)), max(int(x), 0):int(np.ceil(x + bw))] = 1
            if m is not None:
                keep[m > 0] = 0
        return keep

    # ------------------------------------------------------------------ samples
    def __getitem__(self, index: int) -> dict:
        if self.mode == "val":
            return self._val_sample(index)
        return self._train_sample(index)

    # an undecodable file found mid-epoch is replaced by the next images (deterministically)
    MAX_SUBSTITUTES = 10

    def _load_train_image(self, index: int, skipped: list, warned: list):
        """(image id, RGB image) of sample ``index``. A file that cannot be decoded (a valid header
        with a broken body passes ``check_images``) is replaced by the next readable one, in index
        order, so the run goes on and stays reproducible; each replaced file is listed in
        ``skipped``, truncated-JPEG warnings in ``warned`` (the training loop reports them)."""
        n = len(self.image_ids)
        for k in range(min(n, self.MAX_SUBSTITUTES + 1)):
            image_id = self.image_ids[(index + k) % n]
            try:
                return image_id, load_image(self.image_path(image_id), warned)
            except LogocapError as e:
                skipped.append(str(e))
        raise LogocapError(f"{len(skipped)} training images in a row cannot be read, the first: "
                           f"{skipped[0]}")

    def _val_sample(self, index):
        image_id = self.image_ids[index]
        img = load_image(self.image_path(image_id))
        h, w = img.shape[:2]
        M, (ow, oh) = test_transform(h, w, self.input_size)
        return {"image": normalize(warp_image(img, M, (ow, oh))),
                "affine": torch.from_numpy(M), "image_id": image_id, "orig_size": (h, w)}

    def _train_sample(self, index):
        skipped, warned = [], []
        image_id, img = self._load_train_image(index, skipped, warned)
        h, w = img.shape[:2]
        S, s_out = self.input_size, self.input_size // STRIDE
        rng = np.random.default_rng([self.seed, self.epoch, index])
        M, flipped = random_affine(h, w, S, rng, **self.aug)

        anns = self.gt_annotations(image_id)
        # The mask is warped straight to the output maps (out = in / 4); outside the image it
        # becomes 0, i.e. ignored, as in the official code.
        keep = warp_image(self._ignore_mask(anns, h, w).astype(np.float32),
                          output_affine(M, STRIDE), (s_out, s_out)) > 0.5

        kps, areas, boxes = self._people(anns)
        # DEKR's quirk measures the raw annotation (before the affine), scaled like the areas
        off_areas = keypoint_box_area(kps) * affine_scale(M) ** 2 \
            if self.offset_area == "keypoint_box" else None
        if self.offset_area == "instance_box":  # HGR: Z^2 = H^2 + W^2 of the box, scaled alike
            off_areas = box_diagonal_area(boxes, kps) * affine_scale(M) ** 2
        vis = kps[..., 2] > 0
        kps[..., :2] = np.where(vis[..., None], apply_affine(kps[..., :2], M), 0.0)
        if flipped:
            kps = kps[:, list(self.meta.flip_index)]  # a mirrored left wrist is a right wrist
        areas = areas * affine_scale(M) ** 2  # input px^2
        corners = boxes[:, [0, 1, 2, 1, 2, 3, 0, 3]].reshape(-1, 4, 2)
        corners = apply_affine(corners, M) / STRIDE
        boxes_out = np.concatenate([corners.min(1), corners.max(1)], 1) * (
            (boxes[:, 2:] > boxes[:, :2]).all(1, keepdims=True))

        kps_out = kps.copy()
        kps_out[..., :2] /= STRIDE
        t = encode_targets(kps_out, areas, keep, (s_out, s_out), self.meta.num_keypoints,
                           bboxes=boxes_out, offset_areas=off_areas, **self.target_args)

        labelled = (kps[..., 2] > 0).any(1)  # OKS needs at least one labelled joint
        sample = {"image": normalize(warp_image(img, M, (S, S)))}
        sample.update({k: torch.from_numpy(v) for k, v in t.items()})
        sample.update({
            "gt_keypoints": torch.from_numpy(kps[labelled].astype(np.float32)),
            "gt_areas": torch.from_numpy(areas[labelled].astype(np.float32)),
            "image_id": image_id,
            "affine": torch.from_numpy(M),
            "flipped": flipped,
            "skipped_images": skipped,
            "image_warnings": warned,
        })
        return sample


# ---------------------------------------------------------------------- collation
def collate_train(samples: list[dict]) -> dict:
    """Stack maps; pad ground truth to ``gt_keypoints [B, Mmax, K, 3]``, ``gt_areas [B, Mmax]``
    and a boolean ``gt_mask [B, Mmax]`` (True = real person)."""
    out = {k: torch.stack([s[k] for s in samples]) for k in
           ("image", "heatmaps", "heatmap_weights", "offsets", "offset_weights", "affine")}
    B = len(samples)
    K = samples[0]["offsets"].shape[0] // 2
    m_max = max(s["gt_keypoints"].shape[0] for s in samples)
    kps = torch.zeros(B, m_max, K, 3)
    areas = torch.zeros(B, m_max)
    mask = torch.zeros(B, m_max, dtype=torch.bool)
    for b, s in enumerate(samples):
        n = s["gt_keypoints"].shape[0]
        kps[b, :n], areas[b, :n], mask[b, :n] = s["gt_keypoints"], s["gt_areas"], True
    out.update({"gt_keypoints": kps, "gt_areas": areas, "gt_mask": mask,
                "image_id": [s["image_id"] for s in samples],
                "flipped": torch.tensor([bool(s["flipped"]) for s in samples]),
                # files replaced by another image / truncated JPEGs (messages, for the log)
                "skipped_images": [m for s in samples for m in s.get("skipped_images", ())],
                "image_warnings": [m for s in samples for m in s.get("image_warnings", ())]})
    return out


def collate_val(samples: list[dict]) -> dict:
    """Zero-pad images at the bottom / right to the largest H, W (``affine`` stays valid)."""
    H = max(s["image"].shape[1] for s in samples)
    W = max(s["image"].shape[2] for s in samples)
    images = torch.zeros(len(samples), 3, H, W)
    for b, s in enumerate(samples):
        images[b, :, :s["image"].shape[1], :s["image"].shape[2]] = s["image"]
    return {"image": images, "affine": torch.stack([s["affine"] for s in samples]),
            "image_id": [s["image_id"] for s in samples],
            "orig_size": [tuple(s["orig_size"]) for s in samples],
            "input_size": [tuple(s["image"].shape[1:]) for s in samples]}
