"""``logocap bench speed``: inference speed of the reference path, fast fp32 and bf16 for every
method family, in one interleaved run on the same input, with the stage breakdown, the ratios to
the reference and (``--accuracy``, ``--ap``) what the fast paths change in the results.

Stages (ms per image, :meth:`logocap.predict.Predictor.decode`): ``network`` (image + mirror
forward, flip fusion), LOGO-CAP's ``local_kems`` (heatmap upsampling, center NMS, top-T,
offsets), ``local_kams`` (mesh, embedding gather, CMP) and ``global_kams`` (global KEMs,
reweighing, adaptation, top-2); ``decode`` for the other families; ``pose_nms``; ``rescoring``
(the rescoring net, when one is set); ``rest`` (back-projection, scores, packaging). DEKR and
bottom-up SAR split their network into ``backbone`` (mirrored input + HRNet trunk), ``heads``
(heatmap branch + offset transition) and ``adaptive_convs`` (the per-joint adaptive offset
branches), HGR into ``backbone``, ``heads`` and ``regression``; their ``decode`` is the flip
fusion, candidates and pose NMS. ``network_ms_per_image`` = the network stages,
``decode_ms_per_image`` = everything else.

Random weights (``--model``, backbone init ``--init``) refine an arbitrary number of candidates,
so by default the center map is replaced by a fixed positive random one and exactly ``N``
people are refined for each N of ``--candidates`` (0 = the network's own center map).
Checkpoints (``--weights``) run as they are. ``--rescore auto`` (default) times a randomly
initialised rescoring net with random-weight models (its time is real, its scores meaningless)
and a checkpoint's own ``test.rescore`` file with checkpoints.

Every model, candidate count and path is timed in ONE interleaved loop (each iteration runs them
all, one after the other), so load changes on a shared machine hit all alike; ``model_ratios``
gives, for each pair of models, the median of the per-iteration time ratios.

Photos: the still images of ``--inputs`` (a folder or files); default the shared photos
(``shared/assets``) when present, else a random image. The timed images are the first N inputs
whose network input has the first one's shape (N = the largest ``--batch``; repeated when there
are fewer), fed B at a time for each ``--batch`` B: one forward pass and one decode per B
images, the same images for every B.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

import torch

from ..utils import LogocapError, atomic_write_text, machine_info

HELP = "Speed benchmark: reference vs fast fp32 vs bf16 per family, stage breakdown, accuracy."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", choices=["speed", "plot"], help="benchmark to run; plot = the speed-"
                   "accuracy PNG (AP vs ms per image) from the benchmark JSONs")
    p.add_argument("--results", default=None, help="plot: folder of benchmark JSONs (default "
                   "benchmarks/results); --out is then the PNG (default <results>/speed_accuracy.png)")
    p.add_argument("--model", nargs="+", default=None, help="registered model names (random "
                   "weights); default: every bottom-up family's *_hrnet_<variant> model")
    p.add_argument("--variant", default="w32", help="backbone variant of the default models "
                   "(w32, w48, small, tiny)")
    p.add_argument("--init", choices=["kaiming", "official"], default="kaiming", help="random "
                   "weights' backbone init: kaiming (image-dependent maps) or official (HRNet's "
                   "std-0.001 convs: near-constant maps, where any rounding flips peak ties)")
    p.add_argument("--weights", nargs="+", default=None, help="checkpoints to time instead of "
                   "random-weight models (their own test settings)")
    p.add_argument("--inputs", nargs="+", default=None, help="image folder or files to time on "
                   "(default: the shared photos, else a random image)")
    p.add_argument("--size", type=int, default=None, help="input size (short side, multiple of "
                   "64); default 512 for --model, the checkpoint's for --weights")
    p.add_argument("--candidates", type=int, nargs="+", default=[30], help="forced numbers of "
                   "refined people (random center map), each timed; 0 = the network's own centers")
    p.add_argument("--rescore", choices=["auto", "random", "none"], default="auto", help="pose "
                   "rescoring net: auto = a random one for --model, the checkpoint's own for "
                   "--weights; random = a randomly initialised one (time only); none = off")
    p.add_argument("--batch", type=int, nargs="+", default=[1], help="images per forward pass; "
                   "each size runs the same max(--batch) images")
    p.add_argument("--paths", nargs="+", default=["reference", "fast", "bf16"],
                   choices=["reference", "fast", "bf16"], help="test-time paths to compare")
    p.add_argument("--iters", type=int, default=3, help="timed iterations (after 1 warm-up)")
    p.add_argument("--no-flip", action="store_true", help="time without the flip test")
    p.add_argument("--accuracy", action="store_true", help="also compare the paths' poses: on the "
                   "photos with the timed models, and on the committed synthetic checkpoints")
    p.add_argument("--accuracy-images", type=int, default=20, help="synthetic val images for "
                   "--accuracy (0: the timed models on the inputs only)")
    p.add_argument("--ap", action="store_true", help="also the synthetic val AP of fp32 and bf16 "
                   "for each committed synthetic checkpoint (a few minutes)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--out", default=None, help="JSON file to write (e.g. benchmarks/results/...)")


def _repo() -> Path:
    return Path(__file__).resolve().parents[2]


def _inputs(args) -> list[tuple[str, "object"]]:
    import numpy as np

    from ..engine.speed import load_photos, shared_assets

    if args.inputs:
        photos = []
        for item in args.inputs:
            p = Path(item)
            if p.is_dir():
                photos += load_photos(p)
            elif p.is_file():
                from ..data.transforms import load_image
                photos.append((p.name, load_image(p)))
            else:
                raise LogocapError(f"--inputs {item}: no such file or folder")
        if not photos:
            raise LogocapError(f"no images found in {' '.join(args.inputs)}")
        return photos
    photos = load_photos(shared_assets())
    if photos:
        return photos
    rng = np.random.default_rng(0)
    return [("random", rng.integers(0, 256, (480, 640, 3), dtype=np.uint8))]


def _subjects(args):
    """(label, model, meta, input size, test cfg, normalization, candidates) per benchmarked
    network; candidates = the forced candidate counts (0 = natural; checkpoints: [0])."""
    from ..config import DEFAULTS
    from ..meta import COCO
    from ..models import create_model
    from ..predict import default_input_size

    cfg = dict(DEFAULTS["test"])
    if args.no_flip:
        cfg["flip"] = False
    if args.weights:
        from .. import predict
        from ..engine.checkpoint import (build_model_from_checkpoint, checkpoint_test_config,
                                         load_checkpoint)
        for w in args.weights:
            model, meta, info = build_model_from_checkpoint(load_checkpoint(w), None, args.device)
            tc = checkpoint_test_config(info, {"flip": False} if args.no_flip else None)
            if args.rescore != "auto":
                tc["rescore"] = None  # none, or random: set on the predictors
            size = args.size or info.get("input_size") or predict.default_input_size(info["model_name"])
            yield (Path(w).name, model, meta, int(size), tc, info.get("normalization"), [0])
        return
    from ..engine.speed import bench_models
    for name in args.model or bench_models(args.variant):
        torch.manual_seed(0)
        model = create_model(name, backbone_init=args.init).to(args.device).eval()
        yield (name, model, COCO, int(args.size or default_input_size(name)), dict(cfg), None,
               list(dict.fromkeys(args.candidates)))


def _predictor_sets(args, label, model, meta, size, tc, norm, candidates):
    """{candidates: {path: predictor}} of one subject; forced counts share one set of
    (folded) networks (``with_topk``)."""
    from ..engine.speed import build_predictors, random_rescorer, with_topk

    out, forced = {}, None
    for n in candidates:
        if n > 0 and forced is not None:
            out[n] = {k: with_topk(p, n) for k, p in forced.items()}
            continue
        cfg = {**tc, "topk": n} if n > 0 else tc
        out[n] = build_predictors(model, meta, size, cfg, args.paths, args.device, n > 0, norm)
        if n > 0:
            forced = out[n]
    if args.rescore == "random" or (args.rescore == "auto" and not args.weights):
        net = random_rescorer(meta, args.device)
        for preds in out.values():
            for p in preds.values():
                p.rescorer = net
    return out


def _check(args) -> None:
    from .common import check_device, check_out

    check_device(args.device)
    check_out(args.out, "file")
    if args.size is not None and (args.size < 64 or args.size % 64):
        raise LogocapError(f"--size must be a multiple of 64, got {args.size}")
    if args.iters < 1 or any(n < 0 for n in args.candidates) or args.accuracy_images < 0 or \
            any(b < 1 for b in args.batch):
        raise LogocapError("--iters and --batch must be >= 1, --candidates and "
                           "--accuracy-images >= 0")
    if args.model and args.weights:
        raise LogocapError("give --model (random weights) or --weights (checkpoints), not both")
    for names, opt in ((args.model, "--model"), (args.weights, "--weights")):
        if names and len(set(names)) != len(names):
            raise LogocapError(f"{opt} names the same network twice: {' '.join(names)}")
    for w in args.weights or []:
        if not Path(w).is_file():
            raise LogocapError(f"--weights {w}: file not found")


def run(args) -> int:
    if args.what == "plot":  # the speed-accuracy picture (logocap/commands/bench_plot.py)
        from .bench_plot import run as run_plot
        return run_plot(args)
    from ..engine.speed import summarize, time_paths

    _check(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    photos = _inputs(args)
    rescore = {"auto": "a randomly initialised rescoring net (time only)" if not args.weights
               else "the checkpoints' own test.rescore", "none": "off",
               "random": "a randomly initialised rescoring net (time only)"}[args.rescore]
    print(f"rescoring: {rescore}", flush=True)
    # every (model, candidates, path) in one interleaved loop
    preds, inputs, info, accuracy = {}, {}, {}, []
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    for label, model, meta, size, tc, norm, candidates in _subjects(args):
        sets = _predictor_sets(args, label, model, meta, size, tc, norm, candidates)
        first = next(iter(next(iter(sets.values())).values()))
        imgs, names = _batch(first, photos, max(args.batch))
        for n, paths in sets.items():
            for path, p in paths.items():
                preds[(label, n, path)] = p
                inputs[(label, n, path)] = imgs
        info[label] = {"input": names, "input_shape": list(imgs[0][0].shape[-2:]),
                       "rescoring": None if first.rescorer is None else
                       "random" if args.rescore == "random" or not args.weights else "file"}
        if args.accuracy:
            accuracy.append(_accuracy(label, sets[candidates[0]], photos))
    rows, ratios = [], []
    for b in args.batch:  # the same images, fed b at a time
        rec = time_paths(preds, inputs, args.iters, batch=b)
        groups = dict.fromkeys((label, n) for label, n, _ in rec)
        for label, n in groups:
            sub = {path: runs for (m, c, path), runs in rec.items() if (m, c) == (label, n)}
            for path, s in summarize(sub, max(args.batch)).items():
                rows.append({"model": label, "path": path, "batch": b, **info[label],
                             "candidates": n if n > 0 else "natural", **s})
                _print_row(rows[-1])
        ratios += _model_ratios(rec, b, max(args.batch))
    if args.accuracy:
        accuracy += _synthetic_accuracy(args)
    ap = _synthetic_ap(args) if args.ap else None
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    report = {"benchmark": "inference speed, interleaved (models x candidates x reference / fast "
                           "fp32 / bf16)",
              "device": args.device, "init": None if args.weights else args.init,
              "threads": torch.get_num_threads(), "iters": args.iters,
              "flip": not args.no_flip, "paths": args.paths, "rescoring": rescore,
              "load_average_start": load_start, "load_average": load,
              "note": "ratios are medians of per-iteration ratios from one interleaved run (all "
                      "models, candidate counts and paths); absolute ms depend on the load of "
                      "the machine (load_average: 1, 5, 15 min at the start and the end)",
              "rows": rows, "model_ratios": ratios, "accuracy": accuracy, "ap": ap,
              "machine": machine_info()}
    if args.out:
        atomic_write_text(args.out, json.dumps(report, indent=1))
    return 0


def _model_ratios(rec: dict, batch: int, images: int) -> list[dict]:
    """For each pair of models timed with the same candidates and path: ms per image of both and
    how many times faster the first is (median of the per-iteration ratios of wall and of process
    CPU time; CPU time is the steadier on a shared core), printed."""
    from ..engine.speed import time_ratio

    labels = list(dict.fromkeys(m for m, _, _ in rec))
    out = []
    for i, a in enumerate(labels):
        for bm in labels[i + 1:]:
            for (m, n, path), runs_a in rec.items():
                if m != a or (bm, n, path) not in rec:
                    continue
                runs_b = rec[(bm, n, path)]
                r = {"models": [a, bm], "path": path, "batch": batch,
                     "candidates": n if n > 0 else "natural",
                     "ms_per_image": [1000.0 * statistics.median(x["wall"] for x in runs) / images
                                      for runs in (runs_a, runs_b)],
                     "cpu_ms_per_image": [1000.0 * statistics.median(x["cpu"] for x in runs)
                                          / images for runs in (runs_a, runs_b)],
                     "first_faster_by": time_ratio(runs_a, runs_b),
                     "first_faster_by_cpu": time_ratio(runs_a, runs_b, "cpu")}
                out.append(r)
                print(f"{a} vs {bm} [{path}, {r['candidates']} candidates, B={batch}]: "
                      f"{r['ms_per_image'][0]:.1f} vs {r['ms_per_image'][1]:.1f} ms/img; time "
                      f"{bm} / {a} = {r['first_faster_by']:.2f} (wall), "
                      f"{r['first_faster_by_cpu']:.2f} (cpu)", flush=True)
    return out


def _batch(predictor, photos: list, b: int):
    """B prepared inputs of one shape (one forward pass): the first B inputs whose network input
    has the first one's shape, repeated when there are fewer. -> (prepared list, names)."""
    first = predictor.prepare(photos[0][1])
    chosen, names = [first], [photos[0][0]]
    for name, img in photos[1:]:
        if len(chosen) == b:
            break
        prep = predictor.prepare(img)
        if prep[0].shape == first[0].shape:
            chosen.append(prep)
            names.append(name)
    k = len(chosen)
    return [chosen[i % k] for i in range(b)], [names[i % k] for i in range(b)]


def _print_row(r: dict) -> None:
    st = " ".join(f"{k}={v:.1f}" for k, v in r["stages_ms_per_image"].items())
    ratio = r.get("speedup_vs_reference")
    vs = f" x{ratio:.2f} vs reference" if ratio is not None else ""
    print(f"{r['model']:28s} {r['path']:9s} N={r['candidates']!s:<7s} B={r['batch']:<2d} "
          f"{r['ms_per_image']:9.1f} ms/img (cpu {r['cpu_ms_per_image']:.1f}, network "
          f"{r['network_ms_per_image']:.1f}, decode {r['decode_ms_per_image']:.1f}){vs} | {st}",
          flush=True)


def _compare_all(label: str, preds: dict, images: list) -> dict:
    """Poses of every path on ``images`` (one at a time); fast vs reference, bf16 vs fast."""
    from ..engine.speed import compare_poses

    poses = {name: [p.predict(img) for _, img in images] for name, p in preds.items()}
    out = {"subject": label, "images": [n for n, _ in images]}
    if "reference" in poses and "fast" in poses:
        out["fast_vs_reference"] = compare_poses(poses["reference"], poses["fast"], 0.01)
    base = "fast" if "fast" in poses else "reference"
    if "bf16" in poses and base in poses:
        out[f"bf16_vs_{base}"] = compare_poses(poses[base], poses["bf16"], 0.5)
    for key in ("fast_vs_reference", f"bf16_vs_{base}"):
        if key in out:
            c = out[key]
            print(f"accuracy {label:28s} {key:18s} {c['within']}/{c['joints']} joints within "
                  f"{c['tolerance_px']} px ({100 * c['share']:.2f}%), max {c['max_err_px']:.4f} px, "
                  f"people {c['people_ref']} -> {c['people']}", flush=True)
    return out


def _accuracy(label: str, preds: dict, photos: list) -> dict:
    return _compare_all(label, preds, photos)


def _synthetic_checkpoints() -> list[Path]:
    return sorted((_repo() / "checkpoints" / "synthetic").glob("*.pth"))


def _synthetic_accuracy(args) -> list[dict]:
    """The committed synthetic checkpoints on the first synthetic val images, natural centers."""
    from ..data.transforms import load_image
    from ..engine.speed import build_predictors
    from ..engine.checkpoint import (build_model_from_checkpoint, checkpoint_test_config,
                                     load_checkpoint)

    if args.accuracy_images < 1:
        return []
    folder = _repo() / "data" / "synthetic" / "images" / "val"
    files = sorted(folder.glob("*.jpg"))[:args.accuracy_images] if folder.is_dir() else []
    if not files:
        print("accuracy: no synthetic val images (data/synthetic/images/val); skipped")
        return []
    images = [(f.name, load_image(f)) for f in files]
    out = []
    for ck in _synthetic_checkpoints():
        model, meta, info = build_model_from_checkpoint(load_checkpoint(ck), None, args.device)
        preds = build_predictors(model, meta, int(info.get("input_size") or 256),
                                 checkpoint_test_config(info), args.paths, args.device,
                                 forced=False, normalization=info.get("normalization"))
        res = _compare_all(ck.name, preds, images)
        res["images"] = len(images)
        out.append(res)
    return out


def _synthetic_ap(args) -> list[dict]:
    """Synthetic val AP (200 images) of each committed synthetic checkpoint, fp32 vs bf16."""
    from ..engine.recipes import evaluate_run

    root = _repo() / "data" / "synthetic"
    if not (root / "annotations" / "person_keypoints_val.json").is_file():
        print("ap: no data/synthetic val split; skipped")
        return []
    out = []
    for ck in _synthetic_checkpoints():
        row = {"checkpoint": ck.name}
        for prec in ("fp32", "bf16"):
            m = evaluate_run(ck, root, {"precision": prec, "impl": "fast"})
            row[prec] = {"AP": m["AP"], "AP50": m.get("AP50"), "ms_per_image": m["ms_per_image"]}
        row["AP_diff_bf16_minus_fp32"] = row["bf16"]["AP"] - row["fp32"]["AP"]
        print(f"ap {ck.name}: fp32 {row['fp32']['AP']:.4f}  bf16 {row['bf16']['AP']:.4f}  "
              f"diff {row['AP_diff_bf16_minus_fp32']:+.4f}", flush=True)
        out.append(row)
    return out
