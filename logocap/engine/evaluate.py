"""Evaluate a model on a COCO-format validation set with the official COCOeval.

``evaluate_model`` is used by the training loop (periodic evaluation) and by
``logocap eval --weights W --data D`` (``run_model_eval``; the CLI module logocap/commands/eval.py
dispatches here). Both keep the results json and the metrics json in the output folder.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from ..utils import LogocapError

__all__ = ["evaluate_model", "run_model_eval", "resolve_val_data"]


def evaluate_model(model, dataset_val, meta, test_cfg: dict, input_size: int, batch_size: int = 1,
                   device="cpu", out_dir=None, normalization: dict | None = None,
                   verbose: bool = True, boxes: dict | None = None) -> tuple[dict, list]:
    """Predict every image of ``dataset_val`` (a CocoPoseDataset) and run COCOeval on them.

    Returns ``(metrics, results)``: the standard numbers plus ``KptErr`` (Kpt.Error, mean px, when
    any joint was matched) and the COCO results records. With ``out_dir``, ``results.json``,
    ``metrics.json`` and ``kpt_error.json`` (per joint) are written there (atomically).
    Top-down models predict on person boxes: ``boxes`` ``{image_id: (xywh [N, 4], scores [N])}``
    (``topdown.load_boxes``), the ground-truth boxes when None; ``input_size`` is the crop height.
    """
    import numpy as np

    from ..data.transforms import load_image
    from ..evaluation import evaluate_predictions, poses_to_results
    from ..families import family_of
    from ..predict import Predictor

    if batch_size < 1:
        raise LogocapError(f"batch size must be >= 1, got {batch_size}")
    topdown = family_of(model).topdown
    if topdown:  # a top-down family: person boxes instead of whole images
        from ..topdown import TopDownPredictor, gt_boxes
        predictor = TopDownPredictor(model, meta, input_size, test_cfg, device, normalization)
        if boxes is None:
            boxes = gt_boxes(dataset_val.coco, dataset_val.image_ids)
    else:
        predictor = Predictor(model, meta, input_size, test_cfg, device, normalization)
    outside = 0  # top-down boxes entirely outside their image (skipped)
    ids = list(dataset_val.image_ids)
    poses_by_image = {}
    bar = None
    if verbose:
        from tqdm import tqdm
        bar = tqdm(total=len(ids), desc="evaluating", leave=False, dynamic_ncols=True)
    skipped = 0
    for start in range(0, len(ids), batch_size):
        chunk, images = [], []
        for i in ids[start:start + batch_size]:
            problems = []
            try:  # an unreadable image is skipped and counted; the rest are still evaluated
                images.append(load_image(dataset_val.image_path(i), problems))
                chunk.append(i)
            except LogocapError as e:
                print(f"warning: skipped: {e}", file=sys.stderr)
                skipped += 1
            for msg in problems:  # a truncated JPEG is evaluated as decoded, with a warning
                print(f"warning: {msg}", file=sys.stderr)
        if topdown:
            preds = []
            for i, img in zip(chunk, images):
                b, s = boxes.get(i, (np.zeros((0, 4)), np.zeros(0)))
                preds.append(predictor.predict(img, b, s, image_id=i))
                outside += predictor.last_skipped
        else:
            preds = predictor.predict_batch(images)
        for image_id, poses in zip(chunk, preds):
            poses_by_image[image_id] = poses
        if bar is not None:
            bar.update(min(batch_size, len(ids) - start))
    if bar is not None:
        bar.close()
    if skipped:
        print(f"warning: {skipped} of {len(ids)} images could not be read and are not evaluated",
              file=sys.stderr)
    if ids and not poses_by_image:
        raise LogocapError(f"none of the {len(ids)} validation images could be read")
    if outside:
        print(f"warning: skipped {outside} box(es) lying entirely outside their image",
              file=sys.stderr)
    metrics = evaluate_predictions(poses_by_image, dataset_val.coco, meta=meta, out_dir=out_dir,
                                   verbose=verbose)
    results = poses_to_results(poses_by_image)
    metrics = _add_keypoint_error(metrics, results, dataset_val.coco, meta, list(poses_by_image),
                                  out_dir, verbose)
    return metrics, results


def _add_keypoint_error(metrics, results, coco, meta, img_ids, out_dir, verbose) -> dict:
    """Kpt.Error next to the COCO numbers (every family): printed, ``kpt_error.json`` in
    ``out_dir``, and ``KptErr`` in the returned metrics when it is defined."""
    import json

    from ..evaluation import format_keypoint_error, keypoint_error
    from ..utils import atomic_write_text

    err = keypoint_error(results, coco, meta, img_ids=img_ids)
    if verbose:
        print(format_keypoint_error(err))
    if out_dir is not None:
        atomic_write_text(Path(out_dir) / "kpt_error.json", json.dumps(err, indent=1))
    return {**metrics, "KptErr": err["mean_px"]} if err["mean_px"] is not None else metrics


def resolve_val_data(data: str | None, split: str = "val", ann: str | None = None,
                     images: str | None = None) -> tuple[Path, Path]:
    """(annotation json, image folder) of a split: ``data.paths.dataset_paths`` (kept here for
    callers of the old name)."""
    from ..data.paths import dataset_paths
    return dataset_paths(data, split, ann, images)


def _eval_boxes(args, topdown: bool, model_name: str, meta, dataset):
    """Person boxes of a top-down evaluation: ``--boxes FILE`` (a COCO detection json) or, with
    ``--gt-boxes`` or no boxes given, None = the ground-truth boxes. Bottom-up models take none."""
    path, gt = getattr(args, "boxes", None), bool(getattr(args, "gt_boxes", False))
    if not topdown:
        if path or gt:
            raise LogocapError(f"--boxes / --gt-boxes are for top-down models (sar_*_topdown); "
                               f"{model_name} finds people by itself")
        return None
    if path and gt:
        raise LogocapError("give either --boxes FILE or --gt-boxes, not both")
    if not path:
        print("top-down model: using the ground-truth person boxes (--gt-boxes)")
        return None
    from ..topdown import check_topdown_boxes, load_boxes

    boxes = load_boxes(path, category_id=meta.category_id)
    unknown = check_topdown_boxes(boxes, dataset.image_ids)
    if unknown:
        print(f"warning: {path}: boxes of {len(unknown)} image id(s) that are not evaluated are "
              f"ignored (e.g. {', '.join(repr(i) for i in unknown[:5])})", file=sys.stderr)
    return boxes


def run_model_eval(args) -> int:
    """``logocap eval --weights W --data D [--config C] [--model NAME] [--size S] [--split val]
    [--no-flip] [--out DIR] [key=value ...]``: evaluate a checkpoint, print and save the metrics.

    Test settings: defaults < the checkpoint's config < --config / overrides < --size, --flip.
    """
    import json

    from ..commands.common import check_device, check_out
    from ..config import load_config, validate_test_cfg
    from ..data.coco import CocoPoseDataset
    from ..utils import atomic_write_text
    from .checkpoint import build_model_from_checkpoint, checkpoint_test_config, load_checkpoint

    overrides = list(getattr(args, "overrides", None) or [])
    device = check_device(getattr(args, "device", None)) or ("cuda" if torch.cuda.is_available() else "cpu")
    out = getattr(args, "out", None)
    check_out(out, "file" if str(out).endswith(".json") else "folder")
    ckpt = load_checkpoint(args.weights)
    model, meta, info = build_model_from_checkpoint(ckpt, getattr(args, "model", None), device)

    test_cfg = checkpoint_test_config(info)
    if getattr(args, "config", None) or overrides:
        test_cfg.update(load_config(args.config, overrides)["test"])
    flip = getattr(args, "flip", None)
    if flip is not None:
        test_cfg["flip"] = bool(flip)
    if getattr(args, "precision", None):
        test_cfg["precision"] = args.precision
    validate_test_cfg(test_cfg)
    from ..families import family_of
    family = family_of(model)
    topdown = family.topdown  # person boxes
    size = getattr(args, "size", None) or info.get("input_size") or family.default_input_size(model)

    split = getattr(args, "split", None) or "val"
    ann, images = resolve_val_data(getattr(args, "data", None), split,
                                   getattr(args, "ann", None), getattr(args, "images", None))
    dataset = CocoPoseDataset(str(ann), str(images), meta=meta, mode="val", input_size=int(size))
    boxes = _eval_boxes(args, topdown, info["model_name"], meta, dataset)

    if out is None:
        out_dir = Path(args.weights).parent / f"eval_{Path(args.weights).stem}_{split}"
    elif str(out).endswith(".json"):  # eval's results-mode habit: --out is the metrics file
        out_dir = Path(out).parent
    else:
        out_dir = Path(out)
    print(f"evaluating {info['model_name']} ({args.weights}) on {len(dataset)} images of {ann}; "
          f"input {size}, flip {'on' if test_cfg['flip'] else 'off'}, "
          f"decoding {test_cfg.get('upsample')} upsample, {test_cfg.get('precision', 'fp32')} "
          f"({test_cfg.get('impl', 'fast')}), {device}")
    metrics, _ = evaluate_model(model, dataset, meta, test_cfg, int(size), device=device,
                                out_dir=out_dir, normalization=info.get("normalization"),
                                boxes=boxes)
    if out is not None and str(out).endswith(".json"):
        atomic_write_text(out, json.dumps(metrics, indent=1))
    atomic_write_text(out_dir / "eval_settings.json", json.dumps(
        {"weights": str(args.weights), "model_name": info["model_name"], "annotations": str(ann),
         "images": str(images), "input_size": int(size), "test": test_cfg}, indent=1))
    print(f"results and metrics written to {out_dir}")
    return 0
