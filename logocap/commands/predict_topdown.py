"""The top-down branch of ``logocap predict`` (models ``sar_*_topdown``): not a verb of its own.

``logocap predict --weights W --boxes boxes.json [--ann A.json] IMAGES``: every box of the COCO
detection json that belongs to an input image is cropped, predicted and projected back; each
image gets ``<name>.poses.json`` + ``<name>.poses.jpg`` as in the bottom-up mode.

Which image a box belongs to: the box's ``image_id`` against each input file's image id, found
with ``topdown.image_ids_for_files``: by file name in ``--ann A.json`` (a COCO annotation json,
its ``images`` list), else the number the file name is made of (``000000000139.jpg`` -> 139).
Boxes of image ids that are not among the inputs are ignored with a warning naming them; boxes
lying entirely outside their image are skipped and counted; malformed entries (zero / negative
size, NaN, missing fields) stop the run before any output with one line naming them.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ..utils import LogocapError

__all__ = ["is_topdown_checkpoint", "run_topdown"]


def _model_name(weights, model_name: str | None) -> str:
    """``--model``, else the model name stored in the checkpoint ("" when there is none)."""
    if model_name:
        return model_name
    import torch

    path = Path(weights)
    if not path.is_file():
        return ""  # the bottom-up path reports the missing file
    try:  # memory-mapped: the weights are not read
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001  (old formats, corrupt files: the bottom-up path reports them)
        return ""
    return str(ckpt.get("model_name") or "") if isinstance(ckpt, dict) else ""


def is_topdown_checkpoint(weights, model_name: str | None) -> bool:
    """Whether ``--weights`` / ``--model`` name a top-down model (reads only the model name)."""
    from ..models.sar import is_topdown

    return is_topdown(_model_name(weights, model_name))


def run_topdown(args, images: list, missing: list) -> int:
    """``logocap predict`` for a top-down model; ``images`` = [(path, relative path)]."""
    from ..engine.checkpoint import build_model_from_checkpoint, load_checkpoint
    from ..models.sar import is_topdown
    from ..topdown import TopDownPredictor, check_topdown_boxes, image_ids_for_files, load_boxes
    from .predict import predict_each, report_each

    if args.boxes is None:
        name = _model_name(args.weights, args.model)
        raise LogocapError(f"{name} is a top-down model: it needs person "
                           "boxes, give --boxes boxes.json (a COCO detection json: image_id, "
                           "bbox [x, y, w, h], score)")
    for flag, value in (("--batch", args.batch), ("--workers", args.workers),
                        ("--rescore", args.rescore)):
        if value is not None:
            raise LogocapError(f"{flag} is not available for top-down models")
    boxes = load_boxes(args.boxes)  # checked before any model is built
    ids = image_ids_for_files([p for p, _ in images], getattr(args, "ann", None))
    ckpt = load_checkpoint(args.weights)
    model, meta, info = build_model_from_checkpoint(ckpt, args.model, args.device)
    if not is_topdown(model):
        raise LogocapError(f"--boxes is for top-down models (sar_*_topdown); {info['model_name']} "
                           "finds people by itself: drop --boxes")
    if meta.category_id != 1:  # the detection file's class filter follows the keypoint set
        boxes = load_boxes(args.boxes, category_id=meta.category_id)
    unknown = check_topdown_boxes(boxes, ids.values())
    if unknown:
        print(f"warning: {args.boxes}: {len(unknown)} image id(s) are not among the input images; "
              f"their boxes are ignored (e.g. {', '.join(repr(i) for i in unknown[:5])})",
              file=sys.stderr)
    size = args.size or info.get("input_size") or model.input_hw[0]
    predictor = TopDownPredictor(model, meta, size, {"flip": not args.no_flip}, args.device,
                                 info.get("normalization"))
    outside = people = 0
    empty = (np.zeros((0, 4)), np.zeros(0))

    def predict_one(path, img):
        nonlocal outside, people
        b, s = boxes.get(ids[Path(path)], empty)
        poses = predictor.predict(img, b, s, image_id=ids[Path(path)])
        poses.path = str(path)
        outside += predictor.last_skipped
        people += len(poses)
        return poses

    done, skipped = predict_each(images, args.out, predictor.meta, args.threshold, predict_one)
    skipped += len(missing)
    print(f"processed {done}, skipped {skipped}; {people} people from the boxes"
          + (f"; skipped {outside} box(es) lying entirely outside their image" if outside else ""))
    return report_each(done, len(images), args.out)
