"""``logocap predict``: poses for images or folders of images.

For each image ``a.jpg`` writes ``a.jpg.poses.json`` (Poses.to_dict, original pixels) and an
annotated ``a.jpg.poses.jpg``: the whole file name is kept, so ``a.jpg`` and ``a.png`` never share
results. They go next to the image, or under ``--out`` mirroring the input folders below the
deepest folder that holds every argument (``cam1/x.jpg cam2/x.jpg --out R`` -> ``R/cam1/``,
``R/cam2/``; one folder argument maps onto ``R`` itself, sub-folders kept). The json and the
picture are written together or not at all. Unreadable images are skipped with a warning;
truncated JPEGs are used with a warning; the run fails (exit 2) only if none could be read.

At scale (``--batch B`` and/or ``--workers W``): all images of the PATHs go into ONE COCO results
json, ``poses.results.json`` (+ ``poses.results.images.json``, the images done) in ``--out`` or in
the deepest folder common to the PATHs; files are read in W DataLoader workers, B images share a
forward pass, drawings are written only with ``--draw``, a re-run with the same output resumes
(skips the images done), and the run ends with images per second. See logocap/folder_predict.py.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..utils import LogocapError
from .common import (add_device_arguments, add_test_arguments, add_weights_arguments, check_device,
                     check_out)

HELP = ("predict poses on images or folders (image a.jpg -> a.jpg.poses.json + a.jpg.poses.jpg; "
        "with --out, the input folders are mirrored below it; with --batch/--workers, one COCO "
        "results json for all, resumable)")

from ..sources import IMAGE_SUFFIXES  # noqa: E402  (the one list of image suffixes)
OUTPUT_TAG = ".poses"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (searched recursively "
                   f"for {', '.join(IMAGE_SUFFIXES)})")
    add_weights_arguments(p)
    p.add_argument("--out", default=None, help="output folder, mirroring the input folders below "
                   "the deepest folder common to all PATHs; none = next to each image")
    add_test_arguments(p)
    p.add_argument("--rescore", default=None, metavar="FILE", help="pose rescoring net "
                   "(e.g. DEKR's final_rescore_coco_kpt.pth or one from rescore training)")
    add_device_arguments(p)
    td = p.add_argument_group("top-down models (sar_*_topdown; see logocap/commands/predict_topdown.py)")
    td.add_argument("--boxes", default=None, metavar="FILE", help="person boxes, a COCO detection "
                    "json ([{image_id, bbox [x, y, w, h], score}]); required by top-down models")
    td.add_argument("--ann", default=None, metavar="A.json", help="COCO annotation json whose "
                    "'images' list gives each input file's image id by file name; without it the "
                    "id is the number the file name is made of (000000000139.jpg -> 139)")
    scale = p.add_argument_group("at scale (one COCO results json, resumable)")
    scale.add_argument("--batch", type=int, default=None, help="images per forward pass; switches to "
                       "the one-json mode (default there: 8)")
    scale.add_argument("--workers", type=int, default=None, help="DataLoader processes reading the "
                       "images; switches to the one-json mode (default there: 2)")
    scale.add_argument("--draw", action="store_true", help="one-json mode: also write an annotated "
                       "<name>.poses.jpg per image")


def _is_output(path: Path) -> bool:
    return path.stem.endswith(OUTPUT_TAG)  # our own annotated images from an earlier run


def collect_images(paths) -> tuple[list[tuple[Path, Path]], list[str]]:
    """-> ([(image, path relative to the deepest folder common to all arguments)], [missing]).

    A folder argument counts as its own folder, a file argument as the folder it sits in; the
    relative paths keep the input folders apart under ``--out``. A file named twice (itself and
    inside a folder argument) is listed once.
    """
    entries, roots, missing = [], [], []
    for arg in paths:
        p = Path(arg)
        if p.is_dir():
            entries += sorted(f for f in p.rglob("*")
                              if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and not _is_output(f))
            roots.append(p)
        elif p.is_file():
            entries.append(p)
            roots.append(p.parent)
        else:
            missing.append(str(p))
    if not entries:
        return [], missing
    base = os.path.commonpath([os.path.abspath(r) for r in roots])
    found, seen = [], set()
    for f in entries:
        full = os.path.abspath(f)
        if full not in seen:
            seen.add(full)
            found.append((f, Path(os.path.relpath(full, base))))
    return found, missing


def output_paths(image: Path, rel: Path, out: str | None) -> tuple[Path, Path]:
    """(json, picture) for ``image``: the full file name (extension kept) + ``.poses``."""
    folder = image.parent if out is None else Path(out) / rel.parent
    name = image.name + OUTPUT_TAG
    return folder / (name + ".json"), folder / (name + ".jpg")


def write_together(json_path: Path, text: str, picture_path: Path, picture: bytes) -> None:
    """Write the json and the picture atomically, both or neither (the json is removed again if
    the picture cannot be written); LogocapError naming the file that could not be written."""
    from ..utils import atomic_write_bytes, atomic_write_text

    try:
        atomic_write_text(json_path, text)
    except OSError as e:
        raise LogocapError(f"cannot write {json_path}: {e.strerror or e}") from None
    try:
        atomic_write_bytes(picture_path, picture)
    except BaseException as e:
        json_path.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise LogocapError(f"cannot write {picture_path}: {e.strerror or e}") from None
        raise


def predict_each(images: list, out, meta, threshold: float, predict_one) -> tuple[int, int]:
    """The per-image mode: read each image (unreadable ones are warned about and skipped),
    ``predict_one(path, image) -> Poses``, write ``<name>.poses.json`` + ``<name>.poses.jpg``
    together. Returns (images done, images skipped)."""
    import json

    from tqdm import tqdm

    from ..data.transforms import load_image
    from ..viz import draw_poses, encode_image

    done = skipped = 0
    for path, rel in tqdm(images, desc="predict", unit="img", file=sys.stderr):
        problems = []
        try:
            img = load_image(path, problems)
        except LogocapError as e:
            tqdm.write(f"warning: skipped: {e}", file=sys.stderr)
            skipped += 1
            continue
        for msg in problems:
            tqdm.write(f"warning: {msg}", file=sys.stderr)
        poses = predict_one(path, img)
        json_path, jpg_path = output_paths(path, rel, out)
        picture = encode_image(draw_poses(img, poses, meta, threshold), ".jpg")
        write_together(json_path, json.dumps(poses.to_dict(), indent=1), jpg_path, picture)
        done += 1
    return done, skipped


def report_each(done: int, total: int, out) -> int:
    """The end of the per-image mode: LogocapError when none of the ``total`` images could be
    read, else say where the files went. Returns the exit status (0)."""
    if done == 0:
        raise LogocapError(f"none of the {total} images could be read")
    where = "next to the images" if out is None else f"under {out}"
    print(f"wrote {done} <name>.poses.json + <name>.poses.jpg {where}")
    return 0


def run(args) -> int:
    from ..predict import Predictor
    from ..onnx_backend import choose_backend

    if args.weights is None and args.onnx is None:
        raise LogocapError("--weights FILE is required (or --onnx FILE for an exported model)")
    backend = choose_backend(args.backend, args.onnx, args.weights)
    if backend != "torch" and args.boxes is not None:
        raise LogocapError("top-down models (--boxes) run on the torch backend only")
    check_device(args.device)
    check_out(args.out)
    images, missing = collect_images(args.paths)
    for m in missing:
        print(f"warning: no such file or folder: {m}", file=sys.stderr)
    if not images:
        raise LogocapError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {' '.join(args.paths)}")
    if args.size is not None and (args.size < 64 or args.size % 64):
        raise LogocapError(f"--size must be a multiple of 64 (>= 64), got {args.size}")
    overrides = {"flip": False} if args.no_flip else {}
    if args.precision:
        overrides["precision"] = args.precision
    if args.rescore:
        overrides["rescore"] = args.rescore
    if args.size:
        overrides["input_size"] = args.size
    if args.batch is not None and args.batch < 1:
        raise LogocapError(f"--batch must be >= 1, got {args.batch}")
    if args.workers is not None and args.workers < 0:
        raise LogocapError(f"--workers must be >= 0, got {args.workers}")
    from .predict_topdown import is_topdown_checkpoint, run_topdown
    if backend == "torch" and (args.boxes is not None or is_topdown_checkpoint(args.weights, args.model)):
        return run_topdown(args, images, missing)  # method dispatch point (top-down SAR)
    if backend == "onnxruntime":  # the exported graphs on ONNX Runtime, the same torch decoding
        from ..onnx_backend import load_predictor, resolve_onnx_path
        predictor = load_predictor(resolve_onnx_path(args.weights, args.onnx), args.device, **overrides)
    else:
        predictor = Predictor.from_checkpoint(args.weights, args.model, args.device, **overrides)
    if args.batch is not None or args.workers is not None:
        return _run_at_scale(args, predictor, images, len(missing))

    done, skipped = predict_each(images, args.out, predictor.meta, args.threshold,
                                 lambda path, img: predictor.predict(img))
    skipped += len(missing)
    print(f"processed {done}, skipped {skipped}")
    return report_each(done, len(images), args.out)


def _run_at_scale(args, predictor, images, missing: int) -> int:
    """The one-json mode: translate the arguments for ``folder_predict.predict_files``."""
    from ..folder_predict import RESULTS_NAME, predict_files

    first, rel = images[0]
    base = Path(os.path.abspath(first)).parents[len(rel.parts) - 1]  # the folder rel is relative to
    results = Path(args.out or base) / RESULTS_NAME
    draw = (lambda path, name: output_paths(path, Path(name), args.out)[1]) if args.draw else None
    weights = Path(getattr(predictor.model, "path", None) or args.weights)  # .onnx on onnxruntime
    s = predict_files(predictor, [(p, r.as_posix()) for p, r in images], results,
                      batch=8 if args.batch is None else args.batch,
                      workers=2 if args.workers is None else args.workers, draw_path=draw,
                      threshold=args.threshold,
                      settings={"weights": f"{weights.name} ({weights.stat().st_size} bytes)"})
    print(f"predicted {s['done']} images in {s['seconds']:.1f} s ({s['images_per_s']:.2f} images/s), "
          f"{s['resumed']} done by an earlier run, skipped {len(s['skipped']) + missing}")
    for name, reason in s["skipped"]:
        print(f"  skipped {name}: {reason}")
    print(f"wrote {s['results']} ({s['people']} people this run) and {s['index'].name}")
    if args.draw:
        print(f"wrote {s['done']} drawings <name>.poses.jpg "
              f"{'next to the images' if args.out is None else 'under ' + str(args.out)}")
    if s["done"] + s["resumed"] == 0:
        raise LogocapError(f"none of the {len(images)} images could be read")
    return 0
