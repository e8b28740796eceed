"""Test data written into a temporary folder: a tiny COCO-format keypoint dataset, random
images, checkpoints of tiny random models.

Usage::

    from fixtures import make_coco_fixture, random_image, write_tiny_checkpoint
    ann_file, image_dir = make_coco_fixture(tmp_path)            # 3 images, COCO-17 keypoints
    ds = CocoPoseDataset(ann_file, image_dir, input_size=64)
    img = random_image(48, 64, seed=1)                           # (48, 64, 3) uint8
    ckpt = write_tiny_checkpoint(tmp_path / "tiny.pth")          # center_offset_hrnet_tiny, 64 px

``random_image`` and ``write_tiny_checkpoint`` are deterministic: the same arguments give the same
pixels and the same weights (the model is built right after ``torch.manual_seed(seed)``).

What the COCO fixture contains (so tests can rely on it):
- ``num_images`` JPEG images of ``size = (h, w)``, named with letters (``scene-a.jpg``, ...);
  image ids are 1000, 1007, 1014, ... and cannot be parsed from the file names;
- ``people`` annotated people per image (iscrowd 0, labelled joints v = 2, a few v = 0 joints at
  (0, 0)); in every odd-numbered image the first person sticks out of the right border (joints
  outside the image are unlabelled, as in COCO);
- image 0 also holds a crowd region (iscrowd 1, uncompressed RLE, num_keypoints 0) covering the
  box ``CROWD_BOX`` and a person with num_keypoints 0 and a polygon segmentation
  (``NOKPT_BOX``); image 1 (if any) holds a num_keypoints-0 person without a segmentation;
- ``num_empty`` extra images with no annotation at all (dropped by training, kept by validation);
- the json's ``categories`` entry is ``meta.coco_category()`` (default COCO-17); for the CrowdPose
  meta the images carry a ``crowdIndex`` field as the real CrowdPose json does.
Returns ``(ann_file, image_dir)`` as :class:`pathlib.Path`.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

from logocap.engine.checkpoint import save_checkpoint
from logocap.meta import COCO
from logocap.models import create_model

__all__ = ["make_coco_fixture", "random_image", "write_tiny_checkpoint", "TINY_CONFIG", "CROWD_BOX",
           "NOKPT_BOX"]

# the config stored with the tiny test checkpoints: 64 px inputs, few candidates
TINY_CONFIG = {"data": {"input_size": 64}, "test": {"topk": 10, "max_people": 5}}

# (x0, y0, x1, y1) in image 0, fractions of (w, h, w, h)
CROWD_BOX = (0.05, 0.05, 0.35, 0.40)
NOKPT_BOX = (0.70, 0.60, 0.95, 0.95)


def _frac_box(frac, h, w):
    return (int(frac[0] * w), int(frac[1] * h), int(frac[2] * w), int(frac[3] * h))


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO uncompressed RLE: run lengths of the column-major flattened mask, zeros first."""
    flat = mask.flatten(order="F").astype(np.uint8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat[0] == 1:
        runs = [0] + runs
    return {"counts": runs, "size": [int(mask.shape[0]), int(mask.shape[1])]}


def _person(rng, x0, y0, bw, bh, K, h, w):
    """Keypoints uniformly inside a box; joints outside the image or dropped at random -> v 0."""
    xs = rng.uniform(x0 + 0.1 * bw, x0 + 0.9 * bw, K)
    ys = rng.uniform(y0 + 0.1 * bh, y0 + 0.9 * bh, K)
    v = np.where(rng.random(K) < 0.85, 2, 0)
    v[(xs < 0) | (ys < 0) | (xs > w - 1) | (ys > h - 1)] = 0
    v[0] = 2 if 0 <= xs[0] <= w - 1 and 0 <= ys[0] <= h - 1 else v[0]
    kps = np.stack([np.where(v > 0, xs, 0), np.where(v > 0, ys, 0), v], 1)
    cx0, cy0 = max(x0, 0.0), max(y0, 0.0)
    cx1, cy1 = min(x0 + bw, w - 1.0), min(y0 + bh, h - 1.0)
    seg = [[cx0, cy0, cx1, cy0, cx1, cy1, cx0, cy1]]
    return {
        "keypoints": [round(float(a), 2) for a in kps.reshape(-1)],
        "num_keypoints": int((v > 0).sum()),
        "bbox": [float(cx0), float(cy0), float(cx1 - cx0), float(cy1 - cy0)],
        "area": float((cx1 - cx0) * (cy1 - cy0)),
        "segmentation": seg,
        "iscrowd": 0,
    }


# config overrides that point data.* at the layout make_coco_fixture writes (with data.root)
FIXTURE_LAYOUT = ["data.train_ann=annotations/person_keypoints.json", "data.train_images=images",
                  "data.val_ann=annotations/person_keypoints.json", "data.val_images=images"]


def make_coco_fixture(tmp_path, num_images: int = 3, size: tuple[int, int] = (96, 128),
                      people: int = 2, seed: int = 0, meta=None, num_empty: int = 0):
    """Write ``annotations/person_keypoints.json`` and ``images/*.jpg`` under ``tmp_path``.

    ``size`` is (h, w) of every image; see the module docstring for the content.
    """
    meta = meta or COCO
    K = meta.num_keypoints
    h, w = int(size[0]), int(size[1])
    rng = np.random.default_rng(seed)
    root = Path(tmp_path)
    image_dir = root / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    images, anns = [], []

    def add(ann, image_id):
        ann.update({"id": len(anns) + 1, "image_id": image_id, "category_id": meta.category_id})
        anns.append(ann)

    for i in range(num_images + num_empty):
        image_id = 1000 + 7 * i
        name = f"scene-{chr(ord('a') + i % 26)}{i // 26 or ''}.jpg"
        info = {"id": image_id, "file_name": name, "height": h, "width": w}
        if meta.dataset_type == "crowdpose":
            info["crowdIndex"] = round(float(rng.random()), 3)
        images.append(info)
        img = rng.integers(60, 120, (h, w, 3), dtype=np.uint8)
        if i < num_images:
            for p in range(people):
                bw, bh = rng.uniform(0.3, 0.5) * w, rng.uniform(0.5, 0.8) * h
                x0, y0 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
                if p == 0 and i % 2 == 1:
                    x0 = w - 0.6 * bw  # cut by the right border
                ann = _person(rng, x0, y0, bw, bh, K, h, w)
                add(ann, image_id)
                kp = np.asarray(ann["keypoints"]).reshape(K, 3)
                for j, (x, y, v) in enumerate(kp):
                    if v > 0:
                        colour = tuple(int(c) for c in meta.keypoint_colors[j])
                        cv2.circle(img, (int(round(x)), int(round(y))), 2, colour[::-1], -1)
            if i == 0:
                x0, y0, x1, y1 = _frac_box(CROWD_BOX, h, w)
                m = np.zeros((h, w), np.uint8)
                m[y0:y1, x0:x1] = 1
                add({"keypoints": [0] * (3 * K), "num_keypoints": 0, "iscrowd": 1,
                     "bbox": [x0, y0, x1 - x0, y1 - y0], "area": float(m.sum()),
                     "segmentation": _uncompressed_rle(m)}, image_id)
                x0, y0, x1, y1 = _frac_box(NOKPT_BOX, h, w)
                add({"keypoints": [0] * (3 * K), "num_keypoints": 0, "iscrowd": 0,
                     "bbox": [x0, y0, x1 - x0, y1 - y0], "area": float((x1 - x0) * (y1 - y0)),
                     "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]]}, image_id)
            if i == 1:
                add({"keypoints": [0] * (3 * K), "num_keypoints": 0, "iscrowd": 0,
                     "bbox": [2.0, 2.0, 10.0, 12.0], "area": 120.0}, image_id)
        cv2.imwrite(str(image_dir / name), img)

    data = {"info": {"description": "logocap test fixture"}, "images": images,
            "annotations": anns, "categories": [meta.coco_category()]}
    ann_file = root / "annotations" / "person_keypoints.json"
    ann_file.parent.mkdir(parents=True, exist_ok=True)
    ann_file.write_text(json.dumps(data))
    return ann_file, image_dir


def random_image(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """A uniformly random (h, w, 3) uint8 image."""
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def write_tiny_checkpoint(path, model_name: str = "center_offset_hrnet_tiny", cfg: dict | None = None,
                          meta=None, seed: int = 0) -> Path:
    """Save a randomly initialised ``model_name`` (built after ``torch.manual_seed(seed)``) as a
    logocap checkpoint at ``path`` with ``meta`` (default COCO-17) and ``cfg`` (default
    ``TINY_CONFIG``); returns ``path``."""
    torch.manual_seed(seed)
    save_checkpoint(path, create_model(model_name), meta or COCO, TINY_CONFIG if cfg is None else cfg)
    return Path(path)


def train_steps(model, criterion, batch, steps: int, params=None, lr: float = 1e-3) -> list[dict]:
    """``steps`` Adam steps of ``criterion(model, batch)`` (on ``params``, default all of the
    model's) -> each step's loss terms as floats, for "the loss goes down" tests."""
    opt = torch.optim.Adam(model.parameters() if params is None else params, lr)
    hist = []
    for _ in range(steps):
        out = criterion(model, batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        hist.append({k: float(v.detach()) for k, v in out.items() if torch.is_tensor(v)})
    return hist


REPO = Path(__file__).resolve().parents[1]


def require_git_checkout() -> None:
    """Skip the calling test outside a git checkout (a benchmark that compares with a revision)."""
    import pytest

    if subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True).returncode:
        pytest.skip("not a git checkout: no revision to compare with")


def run_benchmark(script: str, args, cwd, timeout: float = 300) -> list[str]:
    """Run ``benchmarks/<script>`` with ``args`` (one OpenMP thread, in ``cwd``), check that it
    exits 0 (its stderr tail otherwise) and return its stdout lines."""
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *map(str, args)],
                         capture_output=True, text=True, timeout=timeout, cwd=cwd,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout.splitlines()
