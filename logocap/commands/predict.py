"""``logocap predict``: poses for images or folders of images.

For each image writes ``<name>.poses.json`` (Poses.to_dict, original pixels) and an annotated
``<name>.poses.jpg`` next to it, or under ``--out`` (keeping sub-folders of a folder argument).
Unreadable images are skipped with a warning; the run fails (exit 2) only if none could be read.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..utils import LogocapError

HELP = "predict poses on images or folders (writes <name>.poses.json and <name>.poses.jpg)"

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
OUTPUT_TAG = ".poses"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (searched recursively "
                   f"for {', '.join(IMAGE_SUFFIXES)})")
    p.add_argument("--weights", required=True, help="logocap checkpoint, or a plain state_dict "
                   "(then --model is needed)")
    p.add_argument("--model", default=None, help="model name (required for plain state_dicts)")
    p.add_argument("--out", default=None, help="output folder; none = next to each image")
    p.add_argument("--size", type=int, default=None, help="input size (short side, multiple of 64); "
                   "none = the checkpoint's, else 512 / 640 for W32 / W48")
    p.add_argument("--threshold", type=float, default=0.3, help="joint score threshold for drawing")
    p.add_argument("--no-flip", action="store_true", help="disable the flip test (faster)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")


def _is_output(path: Path) -> bool:
    return path.stem.endswith(OUTPUT_TAG)  # our own annotated images from an earlier run


def collect_images(paths) -> tuple[list[tuple[Path, Path]], list[str]]:
    """-> ([(image, path relative to its argument root)], [missing paths])."""
    found, missing = [], []
    for arg in paths:
        p = Path(arg)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*")
                           if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and not _is_output(f))
            found += [(f, f.relative_to(p)) for f in files]
        elif p.is_file():
            found.append((p, Path(p.name)))
        else:
            missing.append(str(p))
    return found, missing


def output_paths(image: Path, rel: Path, out: str | None) -> tuple[Path, Path]:
    folder = image.parent if out is None else Path(out) / rel.parent
    name = image.stem + OUTPUT_TAG
    return folder / (name + ".json"), folder / (name + ".jpg")


def run(args) -> int:
    from tqdm import tqdm

    from ..data.transforms import load_image
    from ..predict import Predictor
    from ..viz import draw_poses, save_image

    images, missing = collect_images(args.paths)
    for m in missing:
        print(f"warning: no such file or folder: {m}", file=sys.stderr)
    if not images:
        raise LogocapError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {' '.join(args.paths)}")
    if args.size is not None and (args.size < 64 or args.size % 64):
        raise LogocapError(f"--size must be a multiple of 64 (>= 64), got {args.size}")
    overrides = {"flip": False} if args.no_flip else {}
    if args.size:
        overrides["input_size"] = args.size
    predictor = Predictor.from_checkpoint(args.weights, args.model, args.device, **overrides)

    done, skipped = 0, len(missing)
    for path, rel in tqdm(images, desc="predict", unit="img", file=sys.stderr):
        try:
            img = load_image(path)
        except LogocapError as e:
            tqdm.write(f"warning: skipped: {e}", file=sys.stderr)
            skipped += 1
            continue
        poses = predictor.predict(img)
        json_path, jpg_path = output_paths(path, rel, args.out)
        poses.save_json(json_path)
        save_image(jpg_path, draw_poses(img, poses, predictor.meta, args.threshold))
        done += 1
    print(f"processed {done}, skipped {skipped}")
    if done == 0:
        raise LogocapError(f"none of the {len(images)} images could be read")
    return 0
