"""``logocap bench speed``: Table 4 style timing of LOGO-CAP inference, per stage, with the
candidate count forced to 1 and to 30 (random weights: the timing does not depend on them).

Buckets (ms per image; batch 1, flip test on, CUDA synchronised when on GPU):
- backbone: backbone + heatmap/offset heads on image + mirror, flip fusion (upsampling runs in
  the next bucket's candidate step, as a part of ``center_offset_candidates``);
- local_kems: heatmap upsampling, center NMS, top-T, offsets -> initial poses, center filter;
- local_kams: the embedding conv (``transition_embedding``; the released code times it in no
  bucket, we count it here), local mesh, embedding gather and the CMP;
- global_kams: global KEM sampling, Gaussian reweighing, adaptation conv, top-2;
- rest: pose NMS and back-projection.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from ..utils import LogocapError, atomic_write_text, machine_info

HELP = "Speed benchmark (Table 4 breakdown) of a model: `logocap bench speed --model NAME`."
BUCKETS = ("backbone", "local_kems", "local_kams", "global_kams", "rest")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", choices=["speed", "plot"], help="benchmark to run; plot = the speed-"
                   "accuracy PNG (AP vs ms per image) from the benchmark JSONs")
    p.add_argument("--results", default=None, help="plot: folder of benchmark JSONs (default "
                   "benchmarks/results); --out is then the PNG (default <results>/speed_accuracy.png)")
    p.add_argument("--model", default="logocap_hrnet_w32", help="registered model name (random weights)")
    p.add_argument("--size", type=int, default=512, help="square input size in px")
    p.add_argument("--candidates", type=int, nargs="+", default=[1, 30], help="forced candidate counts")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--iters", type=int, default=5, help="timed iterations per setting (after 1 warm-up)")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--out", default=None, help="JSON file to write")


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def time_once(model, image, meta, cfg, device) -> dict:
    """One timed inference of a [1, 3, S, S] image -> seconds per bucket."""
    from ..codecs.decode import flip_fuse, pose_nms, to_original
    from ..codecs.logocap_decode import decode_logocap

    t = {}
    _sync(device)
    t0 = time.perf_counter()
    feat = model.backbone(torch.cat([image, image.flip(-1)]))
    out = model.forward_heads(feat)
    fused = flip_fuse({k: v[:1] for k, v in out.items()}, {k: v[1:] for k, v in out.items()}, meta)
    _sync(device)
    t1 = time.perf_counter()
    t["backbone"] = t1 - t0
    # random weights give an arbitrary center map (all negative -> a single candidate): put a
    # fixed random positive map in its place so that the forced candidate count is really met
    g = torch.Generator(device="cpu").manual_seed(0)
    fused["heatmaps"][:, -1] = torch.rand(fused["heatmaps"][:, -1].shape, generator=g).to(device)
    t1 = time.perf_counter()
    emb = model.transition_embedding(feat[:1])
    _sync(device)
    t["local_kams"] = time.perf_counter() - t1
    res = decode_logocap(model, fused, emb, meta, cfg, timings=t)
    t["refined_candidates"] = float(res["valid"].sum())
    _sync(device)
    t2 = time.perf_counter()
    keep = pose_nms(res["poses"], res["scores"], res["valid"], cfg["nms_threshold"],
                    cfg["nms_num_joints"], cfg["max_people"], cfg["pose_nms"])
    to_original(res["poses"], torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]], device=device))
    _ = keep.sum().item()
    t["rest"] = time.perf_counter() - t2
    return t


def run(args) -> int:
    if args.what == "plot":  # the speed-accuracy picture (logocap/commands/bench_plot.py)
        from .bench_plot import run as run_plot
        return run_plot(args)
    from ..config import DEFAULTS
    from ..meta import COCO
    from ..models import create_model
    from .common import check_device, check_out

    check_device(args.device)
    check_out(args.out, "file")
    if args.size < 64 or args.size % 64:
        raise LogocapError(f"--size must be a multiple of 64, got {args.size}")
    if args.iters < 1 or any(c < 1 for c in args.candidates):
        raise LogocapError("--iters and --candidates must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    model = create_model(args.model).to(args.device).eval()
    if not hasattr(model, "kam"):
        raise LogocapError(f"model '{args.model}' is not a LOGO-CAP model (no KAM stage to time)")
    image = torch.randn(1, 3, args.size, args.size, device=args.device)
    rows = []
    for n in args.candidates:
        # force n candidates: top-n centers, no score threshold
        cfg = {**DEFAULTS["test"], "topk": n, "center_threshold": -float("inf")}
        time_once(model, image, COCO, cfg, args.device)  # warm-up
        acc = {b: 0.0 for b in BUCKETS + ("refined_candidates",)}
        for _ in range(args.iters):
            for k, v in time_once(model, image, COCO, cfg, args.device).items():
                acc[k] += v
        ms = {b: 1000.0 * acc[b] / args.iters for b in BUCKETS}
        ms["total"] = sum(ms[b] for b in BUCKETS)
        rows.append({"candidates": n, "refined": acc["refined_candidates"] / args.iters, **ms})
    report = {"model": args.model, "size": args.size, "device": args.device,
              "threads": torch.get_num_threads(), "iters": args.iters, "weights": "random",
              "note": "embedding conv counted in local_kams; heatmap upsampling in local_kems",
              "rows": rows, "machine": machine_info()}
    print(f"{args.model} {args.size}x{args.size} on {args.device}, {report['threads']} thread(s), "
          f"random weights, ms per image (mean of {args.iters})")
    print(f"{'#persons':>8s} {'refined':>8s} " + " ".join(f"{b:>11s}" for b in BUCKETS + ("total",)))
    for r in rows:
        print(f"{r['candidates']:8d} {r['refined']:8.0f} "
              + " ".join(f"{r[b]:11.2f}" for b in BUCKETS + ("total",)))
    if args.out:
        atomic_write_text(args.out, json.dumps(report, indent=1))
    return 0
