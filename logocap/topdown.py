"""Top-down prediction: an image and person boxes -> :class:`logocap.Poses` (original pixels).

- :class:`TopDownPredictor`: crops every box (aspect 3:4, padding 1.25), runs the network on the
  crops (and their mirrors with the flip test) in chunks of ``batch`` boxes, decodes with SAR's
  hard argmax, projects back to the original image and scores each pose with box score x mean
  keypoint score. Boxes lying entirely outside the image are skipped (counted in
  ``predictor.last_skipped``).
- :func:`load_boxes`: a COCO detection json (``image_id``, ``bbox`` [x, y, w, h], ``score``),
  checked entry by entry (one clear message naming the bad entries).
- :func:`image_ids_for_files`: which image id each input file has (see the rule there).
- :func:`gt_boxes`: the ground-truth person boxes of a COCO annotation object (``--gt-boxes``).
"""
from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import torch

from .codecs.topdown import (box_to_crop, crop_affines, crop_images, crop_size, crop_to_original,
                             pose_scores, sar_decode, sar_flip_fuse)
from .data.transforms import MEAN, STD
from .meta import KeypointMeta, meta_for_model
from .structures import Poses
from .utils import LogocapError, read_json

__all__ = ["TopDownPredictor", "load_boxes", "image_ids_for_files", "gt_boxes", "boxes_outside",
           "check_topdown_boxes"]

MAX_LISTED = 5  # offending entries named in one message


class TopDownPredictor:
    """Run a top-down SAR model on person boxes.

    Args:
        model: a top-down network (``models.sar``); ``input_size``: the crop height (int, width =
            3/4 of it) or (h, w); None = the model's own ``input_hw``.
        test_cfg: ``flip`` (True) is the only key read; ``batch``: boxes per forward pass.
    """

    def __init__(self, model: torch.nn.Module, meta: KeypointMeta | str = "coco", input_size=None,
                 test_cfg: dict | None = None, device="cpu", normalization: dict | None = None,
                 batch: int = 32):
        self.meta = meta_for_model(model, meta)
        self.crop_hw = crop_size(input_size if input_size is not None
                                 else getattr(model, "input_hw", (256, 192)))
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.cfg = {"flip": True, **copy.deepcopy(dict(test_cfg or {}))}
        if not isinstance(self.cfg["flip"], bool):
            raise LogocapError(f"test.flip must be true or false, got {self.cfg['flip']!r}")
        if int(batch) < 1:
            raise LogocapError(f"batch must be >= 1, got {batch}")
        self.batch = int(batch)
        norm = normalization or {"mean": MEAN, "std": STD}
        self.mean = torch.tensor(norm["mean"], dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        self.std = torch.tensor(norm["std"], dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        self.stride = int(getattr(model, "stride", 4))
        self.last_skipped = 0

    @torch.inference_mode()
    def _decode_crops(self, crops: torch.Tensor):
        """Normalised crops [N, 3, h, w] -> (coords [N, K, 2] crop px, scores [N, K])."""
        dtype = next(self.model.parameters(), torch.empty(0)).dtype
        x = crops.to(self.device, dtype=dtype if dtype.is_floating_point else torch.float32)
        n = x.shape[0]
        if self.cfg["flip"]:  # image and mirror in one forward pass
            x = torch.cat([x, torch.flip(x, dims=[3])])
        out = self.model(x)
        bad = [k for k in ("selector", "offsets") if not torch.isfinite(out[k]).all()]
        if bad:
            raise LogocapError(f"the model produced non-finite values (NaN/Inf) in {', '.join(bad)}: "
                               "its weights are broken (diverged training or a damaged file)")
        coords, scores = sar_decode(out["selector"], out["offsets"], self.stride)
        if self.cfg["flip"]:
            coords, scores = sar_flip_fuse(coords[:n], scores[:n], coords[n:], scores[n:],
                                           self.meta.flip_index, self.crop_hw[1])
        return coords.cpu(), scores.cpu()

    def predict(self, image, boxes, box_scores=None, image_id=None) -> Poses:
        """One RGB image [H, W, 3] and boxes [N, 4] (x, y, w, h, original px) -> Poses sorted by
        score. ``box_scores`` [N] (default 1). Boxes entirely outside the image are skipped."""
        from .sources import to_rgb_uint8

        img = to_rgb_uint8(image)
        h, w = img.shape[:2]
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        scores_in = np.ones(len(boxes)) if box_scores is None else \
            np.asarray(box_scores, np.float64).reshape(-1)
        if len(scores_in) != len(boxes):
            raise LogocapError(f"{len(boxes)} boxes but {len(scores_in)} box scores")
        bad = ~(np.isfinite(boxes).all(1) & (boxes[:, 2] > 0) & (boxes[:, 3] > 0))
        if bad.any():
            raise LogocapError(f"box {int(np.argmax(bad))} is not a box (NaN, or zero / negative "
                               f"size): {boxes[bad][0].tolist()}")
        inside = ~boxes_outside(boxes, (h, w))
        self.last_skipped = int((~inside).sum())
        boxes, scores_in = boxes[inside], scores_in[inside]
        k = self.meta.num_keypoints
        if len(boxes) == 0:
            return Poses(np.zeros((0, k, 3)), np.zeros(0), self.meta, image_id=image_id,
                         image_size=(h, w))
        centres, sizes = box_to_crop(boxes)
        affines = crop_affines(centres, sizes, self.crop_hw)
        img_t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float()
        coords, kscores = [], []
        for s in range(0, len(boxes), self.batch):  # chunks of boxes; each chunk is one batch
            crops = crop_images(img_t, affines[s:s + self.batch], self.crop_hw)
            c, sc = self._decode_crops((crops - self.mean) / self.std)
            coords.append(c)
            kscores.append(sc)
        coords, kscores = torch.cat(coords), torch.cat(kscores)
        xy = crop_to_original(coords.double(), affines)
        kps = torch.cat([xy, kscores.double()[..., None]], -1).float().numpy()
        ps = pose_scores(torch.as_tensor(scores_in), kscores.double()).float().numpy()
        return Poses(kps, ps, self.meta, image_id=image_id, image_size=(h, w)).sorted()


# ------------------------------------------------------------------------------------ boxes
def boxes_outside(boxes, image_hw) -> np.ndarray:
    """[N] True where a box (x, y, w, h) has no overlap with the image area [0, W] x [0, H]."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    h, w = image_hw
    return (b[:, 0] >= w) | (b[:, 1] >= h) | (b[:, 0] + b[:, 2] <= 0) | (b[:, 1] + b[:, 3] <= 0)


def _describe(entries: list[str], total: int) -> str:
    shown = "; ".join(entries[:MAX_LISTED])
    return shown + (f"; and {total - MAX_LISTED} more" if total > MAX_LISTED else "")


def load_boxes(path, category_id: int | None = 1) -> dict:
    """Read a COCO detection json -> ``{image_id: (boxes [N, 4] xywh, scores [N])}``.

    Accepted: a list of records (or ``{"annotations": [...]}``) with ``image_id``, ``bbox``
    [x, y, w, h] and ``score`` (absent = 1.0). Records of another ``category_id`` than
    ``category_id`` (the person class; None = keep all) are ignored. Zero / negative sizes,
    NaN / infinite numbers, missing fields: LogocapError naming the entries (index and image_id).
    """
    path = Path(path)
    data = read_json(path, "boxes")
    if isinstance(data, dict) and isinstance(data.get("annotations"), list):
        data = data["annotations"]
    if not isinstance(data, list):
        raise LogocapError(f"boxes file {path} must hold a list of detections "
                           "({\"image_id\", \"bbox\": [x, y, w, h], \"score\"})")
    problems, out = [], {}
    for i, r in enumerate(data):
        if not isinstance(r, dict):
            problems.append(f"#{i}: not a record")
            continue
        iid = r.get("image_id")
        where = f"#{i} (image_id {iid!r})"
        if category_id is not None and r.get("category_id", category_id) != category_id:
            continue
        if "image_id" not in r or isinstance(iid, (list, dict, bool)) or iid is None:
            problems.append(f"#{i}: no usable image_id")
            continue
        bbox, score = r.get("bbox"), r.get("score", 1.0)
        try:
            b = np.asarray(bbox, dtype=np.float64)
            s = float(score)
        except (TypeError, ValueError):
            problems.append(f"{where}: non-numeric bbox or score")
            continue
        if b.shape != (4,):
            problems.append(f"{where}: bbox must be [x, y, w, h], got {bbox!r}")
        elif not (np.isfinite(b).all() and math.isfinite(s)):
            problems.append(f"{where}: NaN or infinite value in bbox {bbox} / score {score}")
        elif b[2] <= 0 or b[3] <= 0:
            problems.append(f"{where}: zero or negative size (w {b[2]:g}, h {b[3]:g})")
        else:
            out.setdefault(iid, []).append((b, s))
    if problems:
        raise LogocapError(f"boxes file {path}: {len(problems)} unusable entr"
                           f"{'y' if len(problems) == 1 else 'ies'}: "
                           f"{_describe(problems, len(problems))}")
    return {iid: (np.stack([b for b, _ in v]), np.array([s for _, s in v]))
            for iid, v in out.items()}


def check_topdown_boxes(boxes_by_id: dict, known_ids) -> list:
    """The image ids of ``boxes_by_id`` that are not in ``known_ids`` (for a warning naming them);
    LogocapError if no box belongs to any known image."""
    known = set(known_ids)
    unknown = [i for i in boxes_by_id if i not in known]
    if boxes_by_id and len(unknown) == len(boxes_by_id):
        raise LogocapError(f"no box belongs to the input images: the boxes name image id(s) "
                           f"{_describe([repr(i) for i in unknown], len(unknown))}, none of which "
                           f"is an input image (see how image ids are found: --ann)")
    return unknown


def image_ids_for_files(paths, ann=None) -> dict:
    """Image id of each input file (``{path: id}``), the rule of ``logocap predict --boxes``:

    - with an annotation json ``ann`` (COCO ``images`` list): the image whose ``file_name`` is the
      end of the file's path (``file_name`` "x.jpg" or "val2017/x.jpg" matches
      ``.../val2017/x.jpg``); when several match, the longest ``file_name`` wins;
    - without: the number a COCO file name is made of (``000000000139.jpg`` -> 139).
    A file that gets no id is a LogocapError naming it.
    """
    out, missing = {}, []
    by_name = None
    if ann is not None:
        from .data.coco import load_coco_json
        data = load_coco_json(ann)
        by_name = {}
        for img in data["images"]:
            if isinstance(img, dict) and "file_name" in img and "id" in img:
                by_name[Path(str(img["file_name"])).as_posix()] = img["id"]
    for p in paths:
        p = Path(p)
        if by_name is not None:
            parts = Path(p).resolve().as_posix().split("/")
            hit = None
            for n in range(1, len(parts)):  # shortest suffix first; a longer match wins
                suffix = "/".join(parts[-n:])
                if suffix in by_name:
                    hit = by_name[suffix]
            if hit is None:
                missing.append(str(p))
            else:
                out[p] = hit
        elif p.stem.isdigit():
            out[p] = int(p.stem)
        else:
            missing.append(str(p))
    if missing:
        how = (f"its file name is not in {ann}" if ann is not None else
               "its name is not a COCO image number (e.g. 000000000139.jpg); give --ann A.json to "
               "look the ids up by file name")
        raise LogocapError(f"cannot tell the image id of {len(missing)} input image(s) "
                           f"({_describe(missing, len(missing))}): {how}")
    return out


def gt_boxes(coco, image_ids=None, category_id: int | None = None) -> dict:
    """Ground-truth person boxes ``{image_id: (boxes [N, 4] xywh, scores [N] = 1)}``: every
    non-crowd annotation with keypoints (``num_keypoints`` > 0) and a positive-size bbox."""
    ids = coco.getImgIds() if image_ids is None else list(image_ids)
    out = {}
    for iid in ids:
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[iid], iscrowd=None))
        rows = []
        for a in anns:
            if a.get("iscrowd", 0) or category_id is not None and a.get("category_id") != category_id:
                continue
            kp = np.asarray(a.get("keypoints", []), np.float64).reshape(-1, 3)
            n = a.get("num_keypoints", int((kp[:, 2] > 0).sum()) if kp.size else 0)
            bbox = a.get("bbox")
            if n > 0 and bbox and len(bbox) == 4 and bbox[2] > 0 and bbox[3] > 0:
                rows.append(bbox)
        b = np.asarray(rows, np.float64).reshape(-1, 4)
        out[iid] = (b, np.ones(len(b)))
    return out
