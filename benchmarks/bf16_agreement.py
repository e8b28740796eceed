#!/usr/bin/env python
"""Where bf16 inference puts joints away from fp32, and why (issue 13 item 6).

    taskset -c 0 python benchmarks/bf16_agreement.py --threads 1

Subjects: the committed synthetic checkpoints (checkpoints/synthetic/*.pth) on the first
``--images`` synthetic val images (their own centers), and random-weight models (``--models``,
kaiming backbone init) on the shared photos with ``--candidates`` forced centers, as
``logocap bench speed --accuracy`` runs them. Two Predictors per subject: ``test.impl: fast`` in
fp32 (the reference of every comparison) and in bf16 (``test.precision: bf16``). Per subject:

- agreement: bf16 joints within 0.5 px of fp32 (``engine.speed.compare_poses``, the number
  ``bench speed --accuracy`` prints), and for the joints of each image's ``--best`` best-scored
  fp32 people (most of the ~25 people an image keeps are low-score duplicates and background);
- sources: each network output is swapped on its own: fp32 outputs with ONE taken from the bf16
  network ("alone": what that output moves by itself), and bf16 outputs with one taken from fp32
  ("fp32_only_this": what computing that output exactly would give back). Outputs: the center
  channel, the joint heatmaps, the offsets, the LOGO-CAP embedding and the CMP's KAMs;
- decisions: candidates whose center is the same pixel in both paths; each joint moved by more
  than 0.5 px is put down to the pick that moved it: the global top-1 or top-2 (LOGO-CAP) or the
  initial pose (offsets). For a flipped pick (and a flipped center), the fp32 margin (fp32 value at
  fp32's pick minus at bf16's) is compared with the bf16 error of the same map at the two points:
  a margin below that error is a near-tie that a bf16 network cannot decide as fp32 does;
- sensitivity: fp32 outputs plus white noise of eps x each channel's max |value| (a forced center
  channel excepted): the agreement of a network accurate to eps;
- heads_fp32: the bf16 path with the heads' hidden layers (``transition_*``) in fp32 as well:
  agreement, and the network time of fp32 / bf16 / this, interleaved over ``--iters`` rounds.

Prints one table per section and writes benchmarks/results/bf16_agreement_<date>.json.
"""
from __future__ import annotations

import argparse
import statistics
import time

from _common import ROOT, table, write_results  # first: puts the repository on sys.path

import numpy as np  # noqa: E402
import torch  # noqa: E402

from logocap.codecs.decode import center_offset_candidates  # noqa: E402
from logocap.codecs.logocap_decode import decode_cfg, refine  # noqa: E402
from logocap.config import DEFAULTS  # noqa: E402
from logocap.engine.speed import _match, build_predictors, compare_poses  # noqa: E402
from logocap.engine.speed import load_photos, shared_assets  # noqa: E402
from logocap.families.center_offset import network_outputs  # noqa: E402
from logocap.precision import keep_fp32  # noqa: E402
from logocap.utils import LogocapError, machine_info  # noqa: E402

TOL = 0.5  # px, the joint tolerance
HEADS = ("transition_cls", "transition_reg", "transition_embedding")
FAMILIES = ("center_offset", "logocap")  # decoders that read the network's outputs once


class Cached:
    """A Predictor's network replaced by outputs computed before: ``__call__`` returns them
    (for the input they were computed on), ``kam`` is the given CMP."""

    def __init__(self, outputs: dict, kam=None):
        self.outputs, self._kam = outputs, kam

    def __call__(self, x):
        if x.shape[0] != self.outputs["heatmaps"].shape[0]:
            raise RuntimeError("cached outputs belong to another input")
        return dict(self.outputs)

    def kam(self, z):
        return self._kam(z)


def flip_batch(pred, t: torch.Tensor) -> torch.Tensor:
    """The network input decoding builds from one prepared image (image + mirror with flip)."""
    return torch.cat([t[None], t[None].flip(-1)]) if pred.cfg["flip"] else t[None]


def decode_cached(pred, prepared, outputs: dict, kam):
    """Poses of one prepared image decoded by ``pred`` from ``outputs`` (and CMP ``kam``)."""
    net, pred.net = pred.net, Cached(outputs, kam)
    try:
        return pred.predict_prepared([prepared[0]], [prepared[1]], [prepared[2]])[0]
    finally:
        pred.net = net


def sources_of(outputs: dict, has_kam: bool) -> list[str]:
    names = ["center", "joint heatmaps", "offsets"]
    return names + (["embedding"] if "embedding" in outputs else []) + (["KAMs"] if has_kam else [])


def mix(o32: dict, o16: dict, take: set) -> dict:
    """fp32 outputs with the ``take`` sources from the bf16 outputs (the KAMs are not an output
    of the forward pass: the caller picks the CMP)."""
    out = dict(o32)
    hm = o32["heatmaps"].clone()
    if "center" in take:
        hm[:, -1] = o16["heatmaps"][:, -1]
    if "joint heatmaps" in take:
        hm[:, :-1] = o16["heatmaps"][:, :-1]
    out["heatmaps"] = hm
    for key in ("offsets", "embedding"):
        if key in take and key in o16:
            out[key] = o16[key]
    return out


def best_people_agreement(ref: list, other: list, n: int, tol: float) -> dict:
    """Joints of each image's ``n`` best-scored fp32 people (each matched to a bf16 person as
    ``compare_poses`` matches) within ``tol`` px."""
    joints = within = 0
    for a, b in zip(ref, other):
        order = np.argsort(-np.asarray(a.scores), kind="stable")[:n]
        ka = np.asarray(a.keypoints, np.float64)[order]
        kb = np.asarray(b.keypoints, np.float64)
        joints += ka.shape[0] * ka.shape[1] if len(ka) else 0
        for i, j in _match(ka, kb):
            within += int((np.linalg.norm(ka[i, :, :2] - kb[j, :, :2], axis=-1) <= tol).sum())
    return {"people_per_image": n, "joints": joints, "within": within,
            "share": within / joints if joints else None}


def _ratio_summary(r: list[float]) -> dict:
    a = np.asarray(r, np.float64)
    return {"n": int(a.size), "below_bf16_error": int((a < 1).sum()),
            "median_margin_over_error": float(np.median(a)) if a.size else None,
            "p90_margin_over_error": float(np.percentile(a, 90)) if a.size else None}


@torch.no_grad()
def decisions(p32, p16, meta, prepared_list, outs) -> dict:
    """The candidate-level causes of the joint moves (module doc, "decisions")."""
    logocap = p32.family.name == "logocap"
    cfg = decode_cfg(p32.cfg) if logocap else p32.cfg
    k = meta.num_keypoints
    cnt = {"candidates": 0, "same_center": 0, "center_flipped_near": 0, "center_lost": 0,
           "joints": 0, "moved": 0, "by_initial_pose": 0, "by_top1": 0, "by_top2": 0,
           "top1_adjacent": 0, "moved_0.5_to_0.51px": 0}
    center_r, top1_r, top2_r, lost_scores, init_err = [], [], [], [], []
    for prep, (o32, o16, kam32, kam16) in zip(prepared_list, outs):
        x = flip_batch(p32, prep[0])
        f32, pl32 = network_outputs(Cached(o32), x[:1], meta, p32.cfg)
        f16, pl16 = network_outputs(Cached(o16), x[:1], meta, p16.cfg)
        c32 = center_offset_candidates(f32["heatmaps"], f32["offsets"], cfg)
        c16 = center_offset_candidates(f16["heatmaps"], f16["offsets"], cfg)
        u32, u16 = c32["heatmaps_up"][0, k], c16["heatmaps_up"][0, k]
        cen32, cen16 = c32["centers"][0], c16["centers"][0]
        v16 = c16["valid"][0]
        i32, i16 = [], []
        for r in c32["valid"][0].nonzero()[:, 0].tolist():
            cnt["candidates"] += 1
            d = (cen16 - cen32[r]).abs().sum(-1).masked_fill(~v16, float("inf"))
            j = int(d.argmin())
            if float(d[j]) == 0:
                cnt["same_center"] += 1
                i32.append(r)
                i16.append(j)
            elif float(d[j]) <= 8:  # the same person's center, moved to a near-tied pixel
                cnt["center_flipped_near"] += 1
                (xa, ya), (xb, yb) = cen32[r].long().tolist(), cen16[j].long().tolist()
                margin = float(u32[ya, xa] - u32[yb, xb])
                err = float(max(abs(u16[ya, xa] - u32[ya, xa]), abs(u16[yb, xb] - u32[yb, xb])))
                center_r.append(margin / max(err, 1e-12))
            else:  # a candidate the bf16 path does not have (top-k / threshold boundary)
                cnt["center_lost"] += 1
                lost_scores.append(float(c32["center_scores"][0, r]))
        if not i32:
            continue
        p_a, p_b = c32["poses"][0, i32], c16["poses"][0, i16]
        init = (p_b - p_a).norm(dim=-1)
        init_err += init.flatten().tolist()
        if not logocap or cfg["adaptation"] not in ("full", "kems"):
            err = init
            cnt["joints"] += err.numel()
            moved = int((err > TOL).sum())
            cnt["moved"] += moved
            cnt["by_initial_pose"] += moved
            continue
        bi = torch.zeros(len(i32), dtype=torch.long)
        r32 = refine(Cached(o32, kam32), c32["heatmaps_up"], pl32["embedding"], bi, p_a,
                     meta.sigmas, cfg, level=cfg["adaptation"])
        r16 = refine(Cached(o16, kam16), c16["heatmaps_up"], pl16["embedding"], bi, p_b,
                     meta.sigmas, cfg, level=cfg["adaptation"])
        m32 = r32.get("refined", r32["global_kem"]).flatten(-2)
        m16 = r16.get("refined", r16["global_kem"]).flatten(-2)
        a = int(round(m32.shape[-1] ** 0.5))
        t32, t16 = m32.topk(2, -1).indices, m16.topk(2, -1).indices
        err = (r16["joints"] - r32["joints"]).norm(dim=-1)
        cnt["joints"] += err.numel()
        for n, j in (err > TOL).nonzero().tolist():
            cnt["moved"] += 1
            cnt["moved_0.5_to_0.51px"] += int(float(err[n, j]) <= TOL + 0.01)
            for rank, key, ratios in ((0, "by_top1", top1_r), (1, "by_top2", top2_r)):
                pa, pb = int(t32[n, j, rank]), int(t16[n, j, rank])
                if pa != pb:
                    cnt[key] += 1
                    margin = float(m32[n, j, pa] - m32[n, j, pb])
                    e = float(max(abs(m16[n, j, pa] - m32[n, j, pa]),
                                  abs(m16[n, j, pb] - m32[n, j, pb])))
                    ratios.append(margin / max(e, 1e-12))
                    if rank == 0:
                        step = max(abs(pa % a - pb % a), abs(pa // a - pb // a))
                        cnt["top1_adjacent"] += int(step <= 1)
                    break
            else:
                cnt["by_initial_pose"] += 1
    ie = np.asarray(init_err)
    return {**cnt, "center_flips": _ratio_summary(center_r), "top1_flips": _ratio_summary(top1_r),
            "top2_flips": _ratio_summary(top2_r),
            "lost_candidates_fp32_center_score": sorted(round(s, 4) for s in lost_scores),
            "initial_pose_diff_px": {"median": float(np.median(ie)),
                                     "p99": float(np.percentile(ie, 99)),
                                     "max": float(ie.max())} if ie.size else None}


def _channel_max(v: torch.Tensor) -> torch.Tensor:
    return v.abs().amax((-2, -1), keepdim=True)


def _noisy(outputs: dict, eps: float, gen, forced: bool) -> dict:
    out = {}
    for key, v in outputs.items():
        noise = eps * _channel_max(v) * torch.randn(v.shape, generator=gen)
        if key == "heatmaps" and forced:
            noise[:, -1] = 0  # the forced center map is the same in every path
        out[key] = v + noise
    return out


def _noisy_kam(kam, eps: float, gen):
    def f(z):
        v = kam(z)
        return v + eps * _channel_max(v) * torch.randn(v.shape, generator=gen)
    return f


def analyse(label: str, kind: str, preds: dict, meta, images: list, forced: bool, args) -> dict:
    p32, p16, ph = preds["fast"], preds["bf16"], preds["heads"]
    has_kam = p32.family.name == "logocap"
    prepared = [p32.prepare(img) for _, img in images]
    outs = []
    with torch.inference_mode():
        for prep in prepared:
            x = flip_batch(p32, prep[0])
            outs.append((p32.net(x), p16.net(x), p32.net.kam if has_kam else None,
                         p16.net.kam if has_kam else None))
    ref = [decode_cached(p32, prep, o[0], o[2]) for prep, o in zip(prepared, outs)]
    bf = [decode_cached(p16, prep, o[1], o[3]) for prep, o in zip(prepared, outs)]
    row = {"subject": label, "kind": kind, "images": len(images), "forced_centers": forced}
    row["agreement"] = compare_poses(ref, bf, TOL)
    row["agreement_best_people"] = best_people_agreement(ref, bf, args.best, TOL)
    o32, o16 = outs[0][0], outs[0][1]
    row["bf16_output_error_over_channel_max"] = {
        k: float(((o16[k] - o32[k]) / _channel_max(o32[k]).clamp_min(1e-12)).std()) for k in o32}
    # sources
    srcs = sources_of(o32, has_kam)
    alone, only = {}, {}
    for s in srcs:
        for store, take in ((alone, {s}), (only, set(srcs) - {s})):
            poses = [decode_cached(p32, prep, mix(o[0], o[1], take),
                                   o[3] if "KAMs" in take else o[2])
                     for prep, o in zip(prepared, outs)]
            c = compare_poses(ref, poses, TOL)
            store[s] = {"share": c["share"], "missed": c["joints"] - c["within"],
                        "max_err_px": c["max_err_px"]}
    row["sources"] = {"alone": alone, "fp32_only_this": only}
    row["decisions"] = decisions(p32, p16, meta, prepared, outs)
    # sensitivity
    row["sensitivity"] = []
    for eps in args.eps:
        gen = torch.Generator().manual_seed(0)
        poses = [decode_cached(p32, prep, _noisy(o[0], eps, gen, forced),
                               _noisy_kam(o[2], eps, gen) if has_kam else None)
                 for prep, o in zip(prepared, outs)]
        c = compare_poses(ref, poses, TOL)
        row["sensitivity"].append({"eps": eps, "share": c["share"], "max_err_px": c["max_err_px"]})
    # heads in fp32 too: agreement and network time (interleaved)
    hp = [ph.predict_prepared([p[0]], [p[1]], [p[2]])[0] for p in prepared]
    x = flip_batch(p32, prepared[0][0])
    times = {"fp32": [], "bf16": [], "bf16_heads_fp32": []}
    nets = {"fp32": p32.net, "bf16": p16.net, "bf16_heads_fp32": ph.net}
    with torch.inference_mode():
        for n in nets.values():
            n(x)  # warm-up
        for _ in range(args.iters):
            for key, n in nets.items():
                t0 = time.perf_counter()
                n(x)
                times[key].append(time.perf_counter() - t0)
    c = compare_poses(ref, hp, TOL)
    row["heads_fp32"] = {
        "agreement": {k: c[k] for k in ("joints", "within", "share", "max_err_px")},
        "network_ms": {k: 1000 * statistics.median(v) for k, v in times.items()},
        "network_speedup_vs_fp32": {k: statistics.median(a / b for a, b in zip(times["fp32"], v))
                                    for k, v in times.items()},
        "iters": args.iters}
    return row


def label_of(model) -> str:
    return getattr(model, "model_name", type(model).__name__)


def _predictors(model, meta, size, cfg, forced, norm) -> dict:
    """fast fp32, bf16 and bf16 with the heads' hidden layers in fp32 ("heads")."""
    from logocap.families import family_of

    if family_of(model).name not in FAMILIES:
        raise LogocapError(f"{label_of(model)}: only {', '.join(FAMILIES)} models are analysed")
    preds = build_predictors(model, meta, size, cfg, ("fast", "bf16"), "cpu", forced, norm)
    heads = build_predictors(model, meta, size, cfg, ("bf16",), "cpu", forced, norm)["bf16"]
    net = heads.net.model  # the Predictor's own (folded) copy
    names = [h for h in HEADS if hasattr(net, h)]
    keep_fp32(net, names)
    # the bf16 Predictor stores its conv weights in bfloat16 (precision.precast_convs): give the
    # heads back the float32 weights, those of the fast fp32 Predictor's folded copy
    fp32_net = preds["fast"].net.model
    for h in names:
        for p, q in zip(net.get_submodule(h).parameters(), fp32_net.get_submodule(h).parameters()):
            p.data = q.data.clone()
    preds["heads"] = heads
    return preds


def subjects(args):
    from logocap.data.transforms import load_image
    from logocap.engine.checkpoint import (build_model_from_checkpoint, checkpoint_test_config,
                                           load_checkpoint)
    from logocap.meta import COCO
    from logocap.models import create_model

    if args.images > 0:
        val = sorted((ROOT / "data" / "synthetic" / "images" / "val").glob("*.jpg"))[:args.images]
        cks = sorted((ROOT / "checkpoints" / "synthetic").glob("*.pth"))
        if not val or not cks:
            print("no synthetic val images or checkpoints: synthetic subjects skipped")
        images = [(f.name, load_image(f)) for f in val]
        for ck in cks if val else []:
            model, meta, info = build_model_from_checkpoint(load_checkpoint(ck), None, "cpu")
            preds = _predictors(model, meta, int(info.get("input_size") or 256),
                                checkpoint_test_config(info), False, info.get("normalization"))
            yield ck.name, "checkpoint", preds, meta, images, False
    photos = load_photos(shared_assets()) if not args.inputs else load_photos(args.inputs)
    if not photos and args.models:
        rng = np.random.default_rng(0)
        photos = [("random", rng.integers(0, 256, (480, 640, 3), dtype=np.uint8))]
    for name in args.models:
        torch.manual_seed(0)
        model = create_model(name, backbone_init="kaiming").eval()
        cfg = {**DEFAULTS["test"], "topk": args.candidates}
        yield (name, "random weights", _predictors(model, COCO, args.size, cfg, True, None), COCO,
               photos, True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--images", type=int, default=20,
                   help="synthetic val images (0: no checkpoints)")
    p.add_argument("--models", nargs="*", default=["logocap_hrnet_w32"],
                   help="random-weight models run on the photos")
    p.add_argument("--inputs", default=None, help="photo folder (default: the shared photos)")
    p.add_argument("--size", type=int, default=512, help="input size of the random-weight models")
    p.add_argument("--candidates", type=int, default=30, help="forced candidates (random weights)")
    p.add_argument("--eps", type=float, nargs="*", default=[1e-6, 1e-5, 1e-4, 1e-3, 3e-3],
                   help="relative noise levels of the sensitivity section")
    p.add_argument("--best", type=int, default=5, help="best-scored fp32 people per image of the "
                   "agreement_best_people number (the synthetic images hold 4.5 people on average)")
    p.add_argument("--iters", type=int, default=3, help="timed rounds of the heads_fp32 section")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--out", default=None,
                   help="JSON path (default benchmarks/results/bf16_agreement_<date>.json)")
    args = p.parse_args(argv)
    if (args.size < 64 or args.size % 64 or args.candidates < 1 or args.iters < 1
            or args.images < 0 or args.best < 1):
        p.error("--size must be a multiple of 64, --candidates and --iters >= 1, "
                         "--images >= 0, --best >= 1")
    torch.set_num_threads(args.threads)
    rows = []
    try:
        for label, kind, preds, meta, images, forced in subjects(args):
            rows.append(analyse(label, kind, preds, meta, images, forced, args))
            print(f"{label} ({kind}, {len(images)} images)", flush=True)
    except LogocapError as e:
        p.error(str(e))
    _print(rows)
    write_results("bf16_agreement", rows, args, machine_info(), args.out)
    return 0


def _print(rows: list) -> None:
    print(table([("subject", "<34"), ("within 0.5 px", "13.2%"), ("best people", "11.2%"),
                 ("heads fp32", "10.2%"), ("net x (bf16 / heads fp32)", ">25")],
                [(r["subject"], r["agreement"]["share"], r["agreement_best_people"]["share"],
                  r["heads_fp32"]["agreement"]["share"],
                  "{bf16:.2f} / {bf16_heads_fp32:.2f}".format(
                      **r["heads_fp32"]["network_speedup_vs_fp32"]))
                 for r in rows]))
    print("\nsources: share within 0.5 px with ONE output from bf16 (alone) / all but one "
          "(fp32 only this)")
    for r in rows:
        s = r["sources"]
        print(table([("  " + r["subject"], "<34"), ("source", "<15"), ("alone", "7.2%"),
                     ("fp32 only this", "15.2%")],
                    [("", k, s["alone"][k]["share"], s["fp32_only_this"][k]["share"])
                     for k in s["alone"]]))
    print("\ndecisions (same-center candidates): joints moved > 0.5 px and their cause; "
          "flips whose fp32 margin is below the bf16 error")
    cols = [("subject", "<34"), ("joints", "7d"), ("moved", "6d"), ("init", "5d"), ("top1", "5d"),
            ("top2", "5d"), ("pick ties", "9d"), ("centers flipped", "15d"), ("center ties", "11d"),
            ("lost", "5d")]
    out = []
    for r in rows:
        d = r["decisions"]
        ties = d["top1_flips"]["below_bf16_error"] + d["top2_flips"]["below_bf16_error"]
        out.append((r["subject"], d["joints"], d["moved"], d["by_initial_pose"], d["by_top1"],
                    d["by_top2"], ties, d["center_flipped_near"],
                    d["center_flips"]["below_bf16_error"], d["center_lost"]))
    print(table(cols, out))
    print("\nsensitivity: fp32 + white noise eps x channel max, share within 0.5 px")
    eps = [e["eps"] for e in rows[0]["sensitivity"]] if rows else []
    print(table([("subject", "<34")] + [(f"{e:.0e}", "7.2%") for e in eps],
                [(r["subject"], *[e["share"] for e in r["sensitivity"]]) for r in rows]))


if __name__ == "__main__":
    raise SystemExit(main())
