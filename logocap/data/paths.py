"""Where the splits of a dataset folder are: the one helper every verb uses.

A dataset folder holds ``annotations/person_keypoints_<split>.json`` and ``images/<split>/`` (the
layout ``logocap synth`` writes and ``config.DEFAULTS["data"]`` names).
"""
from __future__ import annotations

from pathlib import Path

from ..utils import LogocapError

__all__ = ["split_files", "dataset_paths", "config_paths"]


def split_files(root, split: str = "val") -> tuple[Path, Path]:
    """(annotation json, image folder) of ``split`` in the dataset folder ``root`` (unchecked)."""
    root = Path(root)
    return root / "annotations" / f"person_keypoints_{split}.json", root / "images" / split


def dataset_paths(data=None, split: str = "val", ann=None, images=None) -> tuple[Path, Path]:
    """(annotation json, image folder), checked, from a dataset folder (``split_files``), from an
    annotation json given as ``data`` (``images`` then needed), or from explicit ``ann`` /
    ``images`` (which win over the folder's); LogocapError naming what is missing."""
    if data is not None and Path(data).is_file() and str(data).endswith(".json"):
        ann = ann or data
        if images is None:
            raise LogocapError(f"--data {data} is an annotation file: give the image folder with --images")
    elif data is not None:
        root = Path(data)
        if not root.is_dir():
            raise LogocapError(f"data folder not found: {root}")
        folder_ann, folder_images = split_files(root, split)
        ann, images = ann or folder_ann, images or folder_images
    if ann is None or images is None:
        raise LogocapError("give the validation data: --data DIR, or --ann A.json with --images DIR")
    ann, images = Path(ann), Path(images)
    if not ann.is_file():
        raise LogocapError(f"annotation file not found: {ann}")
    if not images.is_dir():
        raise LogocapError(f"image folder not found: {images}")
    return ann, images


def config_paths(data_cfg: dict, split: str) -> tuple[Path, Path]:
    """(annotation json, image folder) of ``split`` ("train" | "val") of a config ``data``
    section: ``<split>_ann`` and ``<split>_images``, relative to ``root`` unless absolute;
    checked (LogocapError)."""
    root = Path(data_cfg["root"])
    if not root.is_dir():
        raise LogocapError(f"data folder not found: {root}")
    ann, images = (Path(data_cfg[f"{split}_{k}"]) for k in ("ann", "images"))
    return dataset_paths(None, split, root / ann if not ann.is_absolute() else ann,
                         root / images if not images.is_absolute() else images)
