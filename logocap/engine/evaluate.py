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
                   verbose: bool = True) -> tuple[dict, list]:
    """Predict every image of ``dataset_val`` (a CocoPoseDataset) and run COCOeval on them.

    Returns ``(metrics, results)``: the standard numbers and the COCO results records. With
    ``out_dir``, ``results.json`` and ``metrics.json`` are written there (atomically).
    """
    from ..data.transforms import load_image
    from ..evaluation import evaluate_predictions, poses_to_results
    from ..predict import Predictor

    if batch_size < 1:
        raise LogocapError(f"batch size must be >= 1, got {batch_size}")
    predictor = Predictor(model, meta, input_size, test_cfg, device, normalization)
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
        for image_id, poses in zip(chunk, predictor.predict_batch(images)):
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
    metrics = evaluate_predictions(poses_by_image, dataset_val.coco, meta=meta, out_dir=out_dir,
                                   verbose=verbose)
    return metrics, poses_to_results(poses_by_image)


def resolve_val_data(data: str | None, split: str = "val", ann: str | None = None,
                     images: str | None = None) -> tuple[Path, Path]:
    """(annotation json, image folder) from a dataset folder (annotations/person_keypoints_<split>.json
    and images/<split>/) or from explicit paths; LogocapError if anything is missing."""
    if data is not None and Path(data).is_file() and str(data).endswith(".json"):
        ann = ann or data
        if images is None:
            raise LogocapError(f"--data {data} is an annotation file: give the image folder with --images")
    elif data is not None:
        root = Path(data)
        if not root.is_dir():
            raise LogocapError(f"data folder not found: {root}")
        ann = ann or root / "annotations" / f"person_keypoints_{split}.json"
        images = images or root / "images" / split
    if ann is None or images is None:
        raise LogocapError("give the validation data: --data DIR, or --ann A.json with --images DIR")
    ann, images = Path(ann), Path(images)
    if not ann.is_file():
        raise LogocapError(f"annotation file not found: {ann}")
    if not images.is_dir():
        raise LogocapError(f"image folder not found: {images}")
    return ann, images


def run_model_eval(args) -> int:
    """``logocap eval --weights W --data D [--config C] [--model NAME] [--size S] [--split val]
    [--no-flip] [--out DIR] [key=value ...]``: evaluate a checkpoint, print and save the metrics.

    Test settings: defaults < the checkpoint's config < --config / overrides < --size, --flip.
    """
    import json

    from ..commands.common import check_device, check_out
    from ..config import load_config, validate_test_cfg
    from ..data.coco import CocoPoseDataset
    from ..predict import default_input_size
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
    validate_test_cfg(test_cfg)
    size = getattr(args, "size", None) or info.get("input_size") or default_input_size(info["model_name"])

    split = getattr(args, "split", None) or "val"
    ann, images = resolve_val_data(getattr(args, "data", None), split,
                                   getattr(args, "ann", None), getattr(args, "images", None))
    dataset = CocoPoseDataset(str(ann), str(images), meta=meta, mode="val", input_size=int(size))

    if out is None:
        out_dir = Path(args.weights).parent / f"eval_{Path(args.weights).stem}_{split}"
    elif str(out).endswith(".json"):  # eval's results-mode habit: --out is the metrics file
        out_dir = Path(out).parent
    else:
        out_dir = Path(out)
    print(f"evaluating {info['model_name']} ({args.weights}) on {len(dataset)} images of {ann}; "
          f"input {size}, flip {'on' if test_cfg['flip'] else 'off'}, "
          f"decoding {test_cfg.get('upsample')} upsample, {device}")
    metrics, _ = evaluate_model(model, dataset, meta, test_cfg, int(size), device=device,
                                out_dir=out_dir, normalization=info.get("normalization"))
    if out is not None and str(out).endswith(".json"):
        atomic_write_text(out, json.dumps(metrics, indent=1))
    atomic_write_text(out_dir / "eval_settings.json", json.dumps(
        {"weights": str(args.weights), "model_name": info["model_name"], "annotations": str(ann),
         "images": str(images), "input_size": int(size), "test": test_cfg}, indent=1))
    print(f"results and metrics written to {out_dir}")
    return 0
