"""``logocap eval``: official COCO / CrowdPose keypoint metrics.

Results mode: ``logocap eval --results R.json --ann A.json [--out metrics.json]``.
Model mode:   ``logocap eval --weights W --data D ...`` runs a model first; it lives in
``logocap.engine.evaluate.run_model_eval(args)`` and is only dispatched from here.
"""
from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

from ..meta import list_metas
from ..utils import LogocapError

HELP = "Evaluate keypoint results (or a model) with the official COCO / CrowdPose protocol."


def add_arguments(p: argparse.ArgumentParser) -> None:
    res = p.add_argument_group("results mode")
    res.add_argument("--results", help="COCO keypoint results json (list of person records)")
    res.add_argument("--ann", help="ground-truth annotation json (COCO / CrowdPose format)")
    res.add_argument("--meta", choices=list_metas(), default=None,
                     help="keypoint set (sigmas, protocol); taken from the annotation file when not given")
    res.add_argument("--result-images-only", action="store_true",
                     help="evaluate only the images that appear in the results, instead of every "
                          "image of the annotation file (where images without results count as misses)")
    mod = p.add_argument_group("model mode")
    mod.add_argument("--weights", help="checkpoint to evaluate (switches to model mode)")
    mod.add_argument("--data", help="dataset to run the model on (annotation json or dataset folder)")
    mod.add_argument("--config", help="YAML config (test-time settings)")
    mod.add_argument("--model", help="model name, needed for plain state_dict checkpoints")
    mod.add_argument("--size", type=int, default=None,
                     help="test input size (short side); taken from the checkpoint when not given")
    mod.add_argument("--flip", action=argparse.BooleanOptionalAction, default=True,
                     help="flip test (average with the mirrored image)")
    mod.add_argument("--precision", choices=["fp32", "bf16"], default=None,
                     help="network precision (test.precision; default: the checkpoint's, fp32): "
                          "bf16 = bfloat16 autocast for the network and the CMP, decoding in fp32")
    mod.add_argument("--split", default="val",
                     help="split of a dataset folder: annotations/person_keypoints_<split>.json, images/<split>/")
    mod.add_argument("--images", default=None, help="image folder (with --data A.json or --ann A.json)")
    mod.add_argument("--device", choices=["cpu", "cuda"], default=None,
                     help="where to run the model (default: CUDA when available)")
    mod.add_argument("--boxes", default=None, metavar="FILE",
                     help="top-down models (sar_*_topdown): person boxes, a COCO detection json "
                          "([{image_id, bbox [x, y, w, h], score}]); without it the ground-truth boxes")
    mod.add_argument("--gt-boxes", action="store_true",
                     help="top-down models: use the ground-truth person boxes (the default without --boxes)")
    mod.add_argument("overrides", nargs="*", metavar="key=value",
                     help="dotted test-config overrides, e.g. test.adaptation=none")
    p.add_argument("--out", default=None,
                   help="metrics json to write; results mode writes <results>.metrics.json next to "
                        "the results when not given")


def _run_model_mode(args) -> int:
    try:
        engine = importlib.import_module("logocap.engine.evaluate")
    except ModuleNotFoundError as e:
        if e.name != "logocap.engine.evaluate":
            raise
        raise LogocapError("model evaluation needs logocap.engine.evaluate, which this install "
                           "lacks; evaluate a results json with --results R.json --ann A.json") from None
    if not hasattr(engine, "run_model_eval"):
        raise LogocapError("model evaluation needs logocap.engine.evaluate.run_model_eval, "
                           "which this install lacks")
    return engine.run_model_eval(args)


def run(args) -> int:
    if args.weights:
        if args.results:
            raise LogocapError("give either --weights (model mode) or --results (results mode), not both")
        return _run_model_mode(args)
    if not args.results or not args.ann:
        raise LogocapError("give --results R.json --ann A.json (results mode) "
                           "or --weights W --data D (model mode)")
    from ..evaluation import (coco_evaluate, format_keypoint_error, keypoint_error, load_coco_gt,
                              load_results)
    from ..utils import atomic_write_text
    from .common import check_out

    check_out(args.out, "file")
    results = load_results(args.results)
    img_ids = None
    if args.result_images_only:
        # malformed records are reported by coco_evaluate's checks; only collect usable ids here
        img_ids = {r["image_id"] for r in results
                   if isinstance(r, dict) and isinstance(r.get("image_id"), (int, str))}
    res_path = Path(args.results)
    out = Path(args.out) if args.out else res_path.with_name(res_path.stem + ".metrics.json")
    coco_gt = load_coco_gt(args.ann)
    coco_evaluate(results, coco_gt, meta=args.meta, img_ids=img_ids, out_json=out)
    err = keypoint_error(results, coco_gt, meta=args.meta, img_ids=img_ids)  # Kpt.Error
    print(format_keypoint_error(err))
    err_path = out.with_name(out.name[:-len(".json")] + ".kpt_error.json") \
        if out.name.endswith(".json") else out.with_name(out.name + ".kpt_error.json")
    atomic_write_text(err_path, json.dumps(err, indent=1))
    print(f"metrics written to {out}, Kpt.Error (per joint) to {err_path}")
    return 0
