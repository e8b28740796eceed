#!/usr/bin/env python
"""What "spatial-aware" means in SAR, in one picture: DEKR's single center heatmap next to SAR's
selector weights, bottom-up (one map per image) and top-down (one map per joint).

    taskset -c 0 python benchmarks/selector_map.py
    python benchmarks/selector_map.py --data data/synthetic --image-index 3 \\
        --dekr runs/bench_v2/dekr/last.pth --sar-dekr runs/bench_v2/sar_dekr/last.pth \\
        --sar-topdown runs/bench_v2/sar_topdown/last.pth --out benchmarks/results/selector_map.png

One image of the validation split (``--image-index``, in the order of the annotation json;
``--ann A.json --images DIR`` for another layout),
panels (top row: the whole image; bottom row: the largest annotated person):

1. the image with its ground-truth poses; the box of the person the top-down panels use;
2. DEKR (``--dekr``): its center heatmap, channel K of ``heatmaps`` (one map for all joints, a
   peak per person center), colour-mapped over the image (0 .. the map's max);
3. bottom-up SAR (``--sar-dekr``): channel K of ``heatmaps`` is the selector LOGIT s_t; shown are
   the weights w_t = sigmoid(s_t) / sum over all cells of the image of sigmoid(s)
   (``codecs.sar_dekr.selector_scores``, the score map the decoder thresholds), with their max
   and how many cells hold half of the image's mass;
4. top-down SAR (``--sar-topdown``): the crop of the largest person (its ground-truth box, the
   crop geometry of ``codecs.topdown``), then per joint of ``--joints`` (names of the keypoint
   set; default nose, left wrist, right ankle) that joint's selector weights
   sigmoid(s) / sum over the crop's cells (``sar_decode``'s normalisation), the decoded joint
   (x, ``sar_decode``'s hard argmax) and the ground-truth joint (o).

The networks run once on the image (no flip test, one scale), in eval mode; inputs are prepared
as the predictors do (``predict.prepare_image``; the top-down crop as ``TopDownPredictor``).
A checkpoint that does not exist is skipped with a note, its panel saying "not trained yet", so
the script runs with any subset of the three models. Writes the PNG (``--out``) and prints it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _common import RESULTS, ROOT  # first: puts the repository on sys.path

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from logocap.codecs.sar_dekr import selector_scores  # noqa: E402
from logocap.codecs.topdown import box_to_crop, crop_affines, crop_images, sar_decode  # noqa: E402
from logocap.data.coco import load_coco_json  # noqa: E402
from logocap.data.paths import dataset_paths  # noqa: E402
from logocap.data.transforms import MEAN, STD, apply_affine  # noqa: E402
from logocap.engine.checkpoint import build_model_from_checkpoint  # noqa: E402
from logocap.families import family_of  # noqa: E402
from logocap.meta import meta_from_coco_category  # noqa: E402
from logocap.predict import default_input_size, prepare_image  # noqa: E402
from logocap.sources import read_image  # noqa: E402
from logocap.topdown import TopDownPredictor  # noqa: E402
from logocap.utils import LogocapError  # noqa: E402
from logocap.viz import contact_sheet, draw_poses, draw_text_box, save_image  # noqa: E402

DEFAULT_JOINTS = ("nose", "left_wrist", "right_ankle")
PAD = 4  # px between panels
MASS = 0.5  # the share of the selector mass whose cell count is reported


# ------------------------------------------------------------------------------------ helpers
def _shown(path) -> str:
    """A path as the panels and notes show it: relative to the repository when inside it."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(ROOT))
    except ValueError:
        return str(p)


def _fit(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    h, w = hw
    up = h >= img.shape[0]
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR if up else cv2.INTER_AREA)


def _panel(img: np.ndarray, hw: tuple[int, int], lines) -> np.ndarray:
    """``img`` resized to ``hw`` with ``lines`` written in its top-left corner."""
    out = np.ascontiguousarray(_fit(img, hw))
    return draw_text_box(out, list(lines))


def _placeholder(hw: tuple[int, int], title: str, lines) -> np.ndarray:
    return draw_text_box(np.full((*hw, 3), 48, np.uint8), [title, *lines])


def _overlay(rgb: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """``heat`` (same size as ``rgb``, 0..1) colour-mapped (JET) over ``rgb``; low values let the
    picture show through."""
    h01 = np.clip(np.nan_to_num(heat), 0.0, 1.0).astype(np.float32)
    colour = cv2.applyColorMap((h01 * 255).round().astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    a = (0.25 + 0.6 * h01)[..., None]
    out = rgb.astype(np.float32) * (1 - a) + colour.astype(np.float32) * a
    return out.round().astype(np.uint8)


def _unit(m: np.ndarray) -> np.ndarray:
    """A map scaled to 0..1 by its max (negative values 0)."""
    m = np.clip(m, 0.0, None)
    top = float(m.max()) if m.size else 0.0
    return m / top if top > 0 else m


def mass_cells(weights, share: float = MASS) -> int:
    """How many of the largest cells of ``weights`` hold ``share`` of their sum."""
    v = np.sort(np.asarray(weights, np.float64).ravel())[::-1]
    c = np.cumsum(v)
    return int(min(len(v), np.searchsorted(c, share * c[-1]) + 1)) if len(v) else 0


def _map_to_frame(m: np.ndarray, affine: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """A map sampled on the frame of ``affine`` (frame px -> map px), bilinear, edge-clamped
    (as ``resample_aligned``: the last half cell repeats the edge)."""
    return cv2.warpAffine(m.astype(np.float32), np.asarray(affine, np.float64), size_wh,
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


def _marker(img, xy, colour, kind, size) -> None:
    if not np.all(np.isfinite(xy)):
        return
    p = (int(round(float(xy[0]))), int(round(float(xy[1]))))
    t = max(1, size // 6)
    if kind == "x":
        cv2.drawMarker(img, p, (0, 0, 0), cv2.MARKER_TILTED_CROSS, size, t + 2, cv2.LINE_AA)
        cv2.drawMarker(img, p, colour, cv2.MARKER_TILTED_CROSS, size, t, cv2.LINE_AA)
    else:
        cv2.circle(img, p, size // 2, (0, 0, 0), t + 2, cv2.LINE_AA)
        cv2.circle(img, p, size // 2, colour, t, cv2.LINE_AA)


def _load(path, family: str, meta):
    """(model, meta, info) of the checkpoint at ``path``, checked to be of ``family``."""
    model, kp_meta, info = build_model_from_checkpoint(path, meta=meta)
    fam = family_of(info["model_name"]).name
    if fam != family:
        raise LogocapError(f"{_shown(path)} holds a {info['model_name']} model (family {fam}), "
                           f"not one of the {family} family")
    return model.eval(), kp_meta, info


def _norm(info) -> dict:
    return info.get("normalization") or {"mean": MEAN, "std": STD}


# ------------------------------------------------------------------------------------ data
def load_sample(data, index: int, ann=None, images=None):
    """(RGB image, file name, meta, keypoints [N, K, 3], areas [N], boxes [N, 4] (x, y, w, h)) of
    the image's annotated people (non-crowd, at least one labelled joint)."""
    ann_file, image_dir = dataset_paths(data, "val", ann, images)
    coco = load_coco_json(ann_file)
    cats = [c for c in coco["categories"] if isinstance(c, dict) and c.get("keypoints")]
    if not cats:
        raise LogocapError(f"{ann_file}: no category with keypoints")
    meta = meta_from_coco_category(cats[0])
    images = coco["images"]
    if not 0 <= index < len(images):
        raise LogocapError(f"--image-index {index}: {ann_file} has {len(images)} images")
    info = images[index]
    image = read_image(image_dir / info["file_name"])
    k = meta.num_keypoints
    kps, areas, boxes = [], [], []
    for a in coco["annotations"]:
        if a.get("image_id") != info["id"] or a.get("iscrowd", 0) or \
                a.get("category_id", cats[0].get("id")) != cats[0].get("id"):
            continue
        kp = np.asarray(a.get("keypoints") or [0] * 3 * k, np.float64).reshape(k, 3)
        if not (kp[:, 2] > 0).any():
            continue
        box = np.asarray(a.get("bbox") or [0, 0, 0, 0], np.float64)
        if box.shape != (4,) or not (box[2] > 0 and box[3] > 0):
            box = joints_box(kp)
        kps.append(kp)
        boxes.append(box)
        areas.append(float(a.get("area") or box[2] * box[3]))
    return (image, info["file_name"], meta, np.asarray(kps).reshape(-1, k, 3), np.asarray(areas),
            np.asarray(boxes).reshape(-1, 4))


def joints_box(keypoints: np.ndarray) -> np.ndarray:
    """The box (x, y, w, h) of a person's labelled joints, at least 1 px a side (for an
    annotation without a usable bbox)."""
    xy = keypoints[keypoints[:, 2] > 0, :2]
    lo, hi = xy.min(0), xy.max(0)
    return np.array([lo[0], lo[1], max(hi[0] - lo[0], 1.0), max(hi[1] - lo[1], 1.0)])


# ------------------------------------------------------------------------------------ networks
@torch.inference_mode()
def bottom_up_map(path, family: str, image: np.ndarray, meta):
    """Channel K of the network's ``heatmaps`` [h, w] (raw values), the affine original px ->
    map cells and the image's (W, H)."""
    model, kp_meta, info = _load(path, family, meta)
    size = int(info.get("input_size") or default_input_size(info["model_name"]))
    norm = _norm(info)
    x, affine, (h, w) = prepare_image(image, size, norm["mean"], norm["std"])
    dtype = next(model.parameters()).dtype
    out = model(x[None].to(dtype))
    m = out["heatmaps"][0, kp_meta.num_keypoints].float()  # [H/4, W/4]
    stride = x.shape[-1] / m.shape[-1]  # map cell i <-> input px stride * i (library convention)
    return m.cpu().numpy(), np.asarray(affine, np.float64) / stride, (w, h)


def dekr_panel(path, image, meta, hw):
    title = "DEKR: center heatmap (channel K)"
    if not Path(path).is_file():
        return None, _placeholder(hw, title, ["not trained yet:", _shown(path)])
    m, to_map, wh = bottom_up_map(path, "dekr", image, meta)
    heat = _map_to_frame(_unit(m), to_map, wh)
    lines = [title, "one map for all joints", f"max {float(m.max()):.3g} (colour 0..max)"]
    return {"max": float(m.max())}, _panel(_overlay(image, heat), hw, lines)


def sar_dekr_panel(path, image, meta, hw):
    title = "bottom-up SAR: selector weights"
    if not Path(path).is_file():
        return None, _placeholder(hw, title, ["not trained yet:", _shown(path)])
    logits, to_map, wh = bottom_up_map(path, "sar_dekr", image, meta)
    w = selector_scores(torch.from_numpy(logits)[None], "weights")[0].numpy()
    n, cells = mass_cells(w), w.size
    heat = _map_to_frame(w / max(float(w.max()), 1e-30), to_map, wh)
    lines = [title, "w = sigmoid(s) / image sum", f"max {float(w.max()):.3g}",
             f"{MASS:.0%} of mass: {n}/{cells} cells"]
    return {"max": float(w.max()), "mass_cells": n, "cells": cells}, \
        _panel(_overlay(image, heat), hw, lines)


@torch.inference_mode()
def topdown_panels(path, image, meta, person, joints, height: int):
    """The crop panel and one panel per joint (or one placeholder). ``person``: (keypoints
    [K, 3], box (x, y, w, h)) or None."""
    title = "top-down SAR: per-joint selector"
    wide = (height, int(round(height * image.shape[1] / image.shape[0])))
    if not Path(path).is_file():
        return None, [_placeholder(wide, title, ["not trained yet:", _shown(path)])]
    if person is None:
        return None, [_placeholder(wide, title, ["no annotated person in this image"])]
    model, kp_meta, info = _load(path, "sar", meta)
    # the crop size, normalisation and stride as the library's top-down predictor has them
    td = TopDownPredictor(model, kp_meta, input_size=info.get("input_size"),
                          normalization=_norm(info))
    crop_hw, stride = td.crop_hw, td.stride
    person, box = person
    centres, sizes = box_to_crop(box[None])
    affine = crop_affines(centres, sizes, crop_hw)  # [1, 2, 3] original -> crop px
    img_t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()
    crop = crop_images(img_t, affine, crop_hw)  # [1, 3, h, w], 0..255
    dtype = next(model.parameters()).dtype
    out = model(((crop - td.mean) / td.std).to(dtype))
    coords, scores = sar_decode(out["selector"], out["offsets"], stride)  # crop px, max weights
    # each joint's map normalised over the crop's cells: sar_decode's w = sigmoid(s) / sum
    weights = selector_scores(out["selector"][0].float(), "weights").cpu().numpy()  # [K, h, w]
    gt = person.copy()
    gt[:, :2] = apply_affine(person[:, :2], affine[0])
    crop_rgb = crop[0].permute(1, 2, 0).clamp(0, 255).round().byte().numpy()

    ph = height
    pw = int(round(height * crop_hw[1] / crop_hw[0]))
    zoom = ph / crop_hw[0]
    mark = max(8, ph // 16)
    panels = [_panel(draw_poses(_fit(crop_rgb, (ph, pw)), _zoom_pose(gt, zoom), kp_meta, gt=True),
                     (ph, pw), ["top-down SAR", "crop of the largest", "person (its GT box)"])]
    names, stats = pick_joints(kp_meta, joints), {}
    to_map = np.diag([1.0 / stride, 1.0 / stride])
    to_map = np.concatenate([to_map, np.zeros((2, 1))], 1)
    for name in names:
        j = kp_meta.keypoint_names.index(name)
        w = weights[j]
        heat = _map_to_frame(w / max(float(w.max()), 1e-30), to_map, (crop_hw[1], crop_hw[0]))
        img = np.ascontiguousarray(_fit(_overlay(crop_rgb, heat), (ph, pw)))
        if gt[j, 2] > 0:
            _marker(img, _zoom(gt[j, :2], zoom), (60, 255, 60), "o", mark)
        _marker(img, _zoom(coords[0, j].numpy(), zoom), (255, 255, 255), "x", mark)
        n = mass_cells(w)
        stats[name] = {"max": float(scores[0, j]), "mass_cells": n, "cells": w.size}
        panels.append(draw_text_box(img, [name, f"max {float(scores[0, j]):.3g}",
                                          f"{MASS:.0%}: {n}/{w.size} cells", "x decoded o GT"]))
    return stats, panels


def _zoom(xy, zoom: float):
    """Crop px -> px of the crop resized by ``zoom`` (pixel centres kept aligned)."""
    return (xy + 0.5) * zoom - 0.5


def _zoom_pose(kp: np.ndarray, zoom: float) -> np.ndarray:
    out = kp.copy()
    out[:, :2] = _zoom(kp[:, :2], zoom)
    return out[None]


def pick_joints(meta, names) -> list[str]:
    """The names of ``names`` the keypoint set has (a note for the others); when none, its first,
    middle and last joint."""
    have = [n for n in names if n in meta.keypoint_names]
    missing = [n for n in names if n not in meta.keypoint_names]
    if missing:
        print(f"note: keypoint set '{meta.name}' has no joint {', '.join(missing)}")
    if not have:
        k = meta.num_keypoints
        have = list(dict.fromkeys(meta.keypoint_names[i] for i in (0, k // 2, k - 1)))
    return have


# ------------------------------------------------------------------------------------ main
def render(args) -> tuple[np.ndarray, dict]:
    """The sheet (RGB uint8) and the numbers its panels show."""
    image, name, meta, kps, areas, boxes = load_sample(args.data, args.image_index, args.ann,
                                                       args.images)
    h, w = image.shape[:2]
    hw = (args.panel_height, int(round(args.panel_height * w / h)))
    big = int(np.argmax(areas)) if len(kps) else None
    largest = None if big is None else (kps[big], boxes[big])
    for label, path in (("--dekr", args.dekr), ("--sar-dekr", args.sar_dekr),
                        ("--sar-topdown", args.sar_topdown)):
        if not Path(path).is_file():
            print(f"note: {label} {_shown(path)} does not exist (not trained yet): skipped, its "
                  "panel says so")
    gt_img = draw_poses(image, kps, meta, gt=True)
    if largest is not None:
        x, y, bw, bh = largest[1]
        cv2.rectangle(gt_img, (int(x), int(y)), (int(round(x + bw)), int(round(y + bh))),
                      (255, 255, 255), 1, cv2.LINE_AA)
    top = [_panel(gt_img, hw, ["input + ground truth", f"{name}: {len(kps)} people",
                               "box: top-down person"])]
    stats = {"image": name}
    stats["dekr"], p = dekr_panel(args.dekr, image, meta, hw)
    top.append(p)
    stats["sar_dekr"], p = sar_dekr_panel(args.sar_dekr, image, meta, hw)
    top.append(p)
    stats["sar_topdown"], bottom = topdown_panels(args.sar_topdown, image, meta, largest,
                                                  args.joints, args.panel_height)
    rows = [contact_sheet(top, cols=len(top), pad=PAD),
            contact_sheet(bottom, cols=len(bottom), pad=PAD)]
    return contact_sheet(rows, cols=1, pad=0), stats


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT / "data" / "synthetic"),
                   help="dataset folder (its val split is read); default data/synthetic")
    p.add_argument("--ann", default=None, help="annotation json (instead of the folder's)")
    p.add_argument("--images", default=None, help="image folder (instead of the folder's)")
    p.add_argument("--image-index", type=int, default=0)
    p.add_argument("--dekr", default=str(ROOT / "runs/bench_v2/dekr/last.pth"))
    p.add_argument("--sar-dekr", default=str(ROOT / "runs/bench_v2/sar_dekr/last.pth"))
    p.add_argument("--sar-topdown", default=str(ROOT / "runs/bench_v2/sar_topdown/last.pth"))
    p.add_argument("--joints", nargs="+", default=list(DEFAULT_JOINTS),
                   help="joint names of the top-down panels (default: nose left_wrist right_ankle)")
    p.add_argument("--panel-height", type=int, default=384, help="px per panel row")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=str(RESULTS / "selector_map.png"))
    args = p.parse_args(argv)
    if args.panel_height < 32:
        p.error("--panel-height must be at least 32")
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    try:
        sheet, stats = render(args)
        out.parent.mkdir(parents=True, exist_ok=True)
        save_image(out, sheet)  # atomic; an unsupported suffix is a LogocapError
    except LogocapError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for key in ("dekr", "sar_dekr"):
        if stats[key]:
            print(f"{key}: " + ", ".join(f"{k} {v:.4g}" for k, v in stats[key].items()))
    for joint, s in (stats["sar_topdown"] or {}).items():
        print(f"sar_topdown {joint}: max weight {s['max']:.4g}, {MASS:.0%} of the mass in "
              f"{s['mass_cells']}/{s['cells']} cells")
    print(f"written {_shown(out)} ({sheet.shape[1]}x{sheet.shape[0]} px, image {stats['image']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
