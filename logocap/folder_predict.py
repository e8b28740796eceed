"""Predict a collection of image files (a folder) into one COCO results json, resumably.

Files are read and prepared (decoded, warped, normalised) in DataLoader worker processes; the
main process runs the network on batches of same-shape inputs (different shapes never share a
pass, so results equal single-image prediction) and writes:

- ``poses.results.json``: the COCO keypoint results list (``image_id``, ``category_id``,
  ``keypoints`` K*3 in original pixels, ``score``; plus ``file_name`` for the reader), ready for
  ``COCO.loadRes`` / ``logocap eval --results``;
- ``poses.results.images.json`` beside it: the images done (``id``, ``file_name`` relative to the
  collection's folder, ``height``, ``width``, including images where nobody was found), the files
  skipped with the reason, and the model settings. A re-run with the same output skips the images
  listed there; a run with other settings (model, weights, input size, test options) is refused
  rather than mixed into the same file.

Both files are written atomically every ``save_every`` seconds and at the end (also after Ctrl-C
or an error), records of images not in the index are dropped on reading, so an interruption
anywhere loses at most the last ``save_every`` seconds of work and never duplicates a record.
Image ids: the number in COCO-style names (``000000000139.jpg`` -> 139) when every file of the
collection has one, else a running number (kept across resumed runs).
"""
from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Callable

from .api import iter_poses
from .predict import Predictor, prepare_image
from .sources import PreparedImages, prepared_loader
from .utils import LogocapError, atomic_write_text

__all__ = ["RESULTS_NAME", "index_path", "predict_files"]

RESULTS_NAME = "poses.results.json"
_FORMAT = "logocap-results-index"


def index_path(results_path) -> Path:
    """``x.results.json`` -> ``x.results.images.json``."""
    p = Path(results_path)
    stem = p.name[:-5] if p.name.endswith(".json") else p.name
    return p.with_name(stem + ".images.json")


def _settings(predictor: Predictor, extra: dict | None) -> dict:
    test = json.loads(json.dumps(predictor.cfg, default=str))
    return {"model": getattr(predictor.model, "model_name", type(predictor.model).__name__),
            "keypoints": predictor.meta.name, "input_size": predictor.input_size, "test": test,
            **(extra or {})}


def _read_json(path: Path, what: str):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise LogocapError(f"cannot resume from {path}: not a readable {what} ({str(e)[:100]}); "
                           "delete it or choose another output") from None


def _load_existing(results_path: Path, settings: dict) -> tuple[list, dict]:
    idx_path = index_path(results_path)
    if not results_path.exists() and not idx_path.exists():
        return [], {"format": _FORMAT, "settings": settings, "images": [], "skipped": []}
    if not idx_path.exists():
        raise LogocapError(f"{results_path} exists but {idx_path.name} (the list of images done) "
                           "does not: it was not written by this command; delete it or choose "
                           "another output")
    index = _read_json(idx_path, "logocap results index")
    if not isinstance(index, dict) or index.get("format") != _FORMAT:
        raise LogocapError(f"{idx_path} is not a logocap results index; delete it or choose another output")
    old = index.get("settings") or {}
    diff = sorted(k for k in set(old) | set(settings) if k != "test" and old.get(k) != settings.get(k))
    old_test, new_test = old.get("test") or {}, settings.get("test") or {}
    # test options added to the library since: compared only where both runs name them
    diff += sorted(f"test.{k}" for k in set(old_test) & set(new_test) if old_test[k] != new_test[k])
    if diff:
        raise LogocapError(f"{results_path} was written with other settings ({', '.join(diff)} "
                           "differ): resuming would mix results; delete it or choose another output")
    results = _read_json(results_path, "COCO results list") if results_path.exists() else []
    if not isinstance(results, list):
        raise LogocapError(f"{results_path} is not a COCO results list")
    done_ids = {im["id"] for im in index.get("images", [])}
    # a save cut between the two files leaves records of images the index does not list yet
    results = [r for r in results if r.get("image_id") in done_ids]
    index.setdefault("skipped", [])
    index["settings"] = settings
    return results, index


def _id_rule(all_names: list[str], index: dict) -> Callable[[str], int]:
    """image id for a file name: its number (COCO style) or a running number."""
    if "id_rule" not in index:
        stems = [Path(n).stem for n in all_names]
        numeric = all(s.isdigit() for s in stems) and len({int(s) for s in stems}) == len(stems)
        index["id_rule"] = "number_in_name" if numeric else "running"
    used = {im["id"] for im in index["images"]}
    counter = [max(used, default=0)]

    def next_id(name: str) -> int:
        stem = Path(name).stem
        if index["id_rule"] == "number_in_name" and stem.isdigit() and int(stem) not in used:
            used.add(int(stem))
            return int(stem)
        counter[0] = max(counter[0], max(used, default=0)) + 1
        used.add(counter[0])
        return counter[0]
    return next_id


def predict_files(predictor: Predictor, files: list[tuple[Path, str]], results_path, *,
                  batch: int = 8, workers: int = 2,
                  draw_path: Callable[[Path, str], Path] | None = None, threshold: float = 0.3,
                  settings: dict | None = None, save_every: float = 30.0, progress: bool = True,
                  warn: Callable[[str], None] | None = None) -> dict:
    """Predict ``files`` (``(path, name relative to the collection)``) into ``results_path``.

    ``draw_path(path, name)``: where to write each annotated image (none: no drawings).
    ``settings``: extra facts that must match for a resume (e.g. the weights file).
    Returns a summary: ``done`` (this run), ``resumed`` (done before), ``skipped``
    [(name, reason)], ``people``, ``seconds``, ``images_per_s``, ``results``, ``index``.
    """
    import sys

    from tqdm import tqdm

    from .viz import draw_poses, save_image

    if batch < 1:
        raise LogocapError(f"batch must be >= 1, got {batch}")
    if workers < 0:
        raise LogocapError(f"workers must be >= 0, got {workers}")
    warn = warn or (lambda msg: tqdm.write(f"warning: {msg}", file=sys.stderr))
    results_path = Path(results_path)
    results, index = _load_existing(results_path, _settings(predictor, settings))
    done_names = {im["file_name"] for im in index["images"]}
    todo = [(p, name) for p, name in files if name not in done_names]
    resumed = len(files) - len(todo)
    next_id = _id_rule(sorted({n for _, n in files} | done_names), index)
    name_of = {str(p): name for p, name in todo}
    index["skipped"] = []

    prepare = functools.partial(prepare_image, input_size=predictor.input_size,
                                mean=predictor.mean.view(-1).tolist(), std=predictor.std.view(-1).tolist())
    dataset = PreparedImages([p for p, _ in todo], prepare, keep_image=draw_path is not None)
    loader = prepared_loader(dataset, batch, workers) if todo else []
    bar = tqdm(total=len(todo), desc="predict", unit="img", file=sys.stderr, disable=not progress,
               dynamic_ncols=True)

    def good_items():
        for chunk in loader:
            for item in chunk:
                if "error" in item:
                    name = name_of[str(item["path"])]
                    index["skipped"].append({"file_name": name, "reason": item["error"]})
                    warn(f"skipped: {item['error']}")
                    bar.update(1)
                    continue
                yield item

    def save():
        results_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(results_path, json.dumps(results))
        atomic_write_text(index_path(results_path), json.dumps(index, indent=1))

    done = people = 0
    t0 = last_save = time.perf_counter()
    try:
        for poses in iter_poses(predictor, good_items(), batch, window=4 * batch):
            name = name_of[poses.path]
            image_id = next_id(name)
            h, w = poses.image_size
            results.extend({**r, "file_name": name} for r in poses.to_coco(image_id))
            index["images"].append({"id": image_id, "file_name": name, "height": int(h), "width": int(w)})
            if draw_path is not None:
                save_image(draw_path(Path(poses.path), name), draw_poses(poses.image, poses, predictor.meta,
                                                                          threshold))
                poses.image = None
            done += 1
            people += len(poses)
            bar.update(1)
            if time.perf_counter() - last_save > save_every:
                save()
                last_save = time.perf_counter()
    finally:
        bar.close()
        save()  # also after Ctrl-C or an error: the work done so far is kept for a resume
    seconds = time.perf_counter() - t0
    return {"done": done, "resumed": resumed, "people": people,
            "skipped": [(s["file_name"], s["reason"]) for s in index["skipped"]],
            "seconds": seconds, "images_per_s": done / seconds if seconds > 0 else 0.0,
            "results": results_path, "index": index_path(results_path)}
