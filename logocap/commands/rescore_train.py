"""``logocap rescore-train``: train the pose rescoring net on a model's own predictions.

Runs the model on a training split, takes each predicted pose's OKS with its best-matching
ground-truth person as the target and fits the rescoring net (Adam 1e-3, batch 1024, 20 epochs,
MSE; DEKR's recipe). Use the result with ``logocap predict --rescore FILE`` or
``logocap eval ... test.rescore=FILE``. The library side is ``logocap.engine.rescore``.
"""
from __future__ import annotations

import argparse

HELP = "train the pose rescoring net on a model's predictions (writes a rescoring file)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True, help="model checkpoint (or a plain state_dict with --model)")
    p.add_argument("--model", default=None, help="model name (required for plain state_dicts)")
    p.add_argument("--data", default=None, help="dataset folder (annotations/person_keypoints_<split>.json, "
                   "images/<split>/) or an annotation json (then --images)")
    p.add_argument("--split", default="train", help="split of a dataset folder")
    p.add_argument("--ann", default=None, help="annotation json (instead of --data)")
    p.add_argument("--images", default=None, help="image folder (with --ann or --data A.json)")
    p.add_argument("--out", required=True, help="rescoring file to write (a .json summary goes next to it)")
    p.add_argument("--size", type=int, default=None, help="input size; none = the checkpoint's")
    p.add_argument("--no-flip", action="store_true", help="predict without the flip test")
    p.add_argument("--max-images", type=int, default=None, help="use only the first N images")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="torch device for the pose model")


def run(args) -> int:
    from ..engine.rescore import run_rescore_train

    return run_rescore_train(args)
