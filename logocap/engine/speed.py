"""Inference speed and accuracy of the test-time paths, measured in one interleaved run
(``logocap bench speed``; issue 13).

Paths (:data:`PATHS`), each a :class:`~logocap.predict.Predictor` on the same weights and input:

- ``reference``: ``test.impl: reference``, fp32: the plain network in NCHW, the per-point
  global-KEM gather (today's implementation before the speed work; the baseline of the ratios);
- ``fast``: ``test.impl: fast``, fp32: conv+BN folded, channels_last, separable gather;
- ``bf16``: ``fast`` with ``test.precision: bf16`` (network and CMP under bfloat16 autocast).

Timing: the paths run one after the other on the same input in every iteration (interleaved),
so load changes on a shared machine hit every path alike; per path the median wall and CPU
(process) time per image and per stage, and the ratio to the reference as the median of the
per-iteration ratios. With random weights the number of refined candidates would be arbitrary,
so :class:`ForcedCenters` replaces the center map by a fixed positive random map and the test
config asks for exactly ``topk`` candidates (as the paper's Table 4 counts persons).

Stages: each path's decoder ticks its stages (``Predictor.decode``); the network stages are
:data:`NETWORK_STAGES` (LOGO-CAP and center-offset: one "network"; DEKR, HGR and bottom-up SAR
split it by their ``stage_marks``: "backbone", "heads", "adaptive_convs" / "regression"), and the
stages of one call sum to its wall time. Several models (and candidate counts) can be timed in the
same interleaved loop (:func:`time_paths` takes any keys), so their ratios see the same load.

Accuracy: :func:`compare_poses` matches the people of two runs and reports the largest joint
difference and the share of joints within a tolerance.
"""
from __future__ import annotations

import copy
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from ..utils import LogocapError

__all__ = ["PATHS", "NETWORK_STAGES", "bench_models", "ForcedCenters", "TimedNet",
           "build_predictors", "with_topk", "random_rescorer", "time_paths", "summarize",
           "time_ratio", "compare_poses", "shared_assets", "load_photos"]

PATHS = {"reference": {"impl": "reference", "precision": "fp32"},
         "fast": {"impl": "fast", "precision": "fp32"},
         "bf16": {"impl": "fast", "precision": "bf16"}}

# the stages that are the network's forward pass (the decoders' timing names)
NETWORK_STAGES = ("network", "backbone", "heads", "adaptive_convs", "regression")


def bench_models(variant: str = "w32") -> list[str]:
    """The registered bottom-up models of one backbone variant (``*_hrnet_<variant>``), one per
    method family; top-down models (person boxes needed) are left out."""
    from ..families import family_of
    from ..models import list_models

    names = [n for n in list_models() if n.endswith(f"_hrnet_{variant}")
             and family_of(n).decode is not None]  # families that decode whole images
    if not names:
        raise LogocapError(f"no registered model ends in _hrnet_{variant}")
    return names


class ForcedCenters:
    """The network with its center channel (the last heatmap channel) replaced by a fixed
    positive random map (one per map size, seeded), so that with ``center_threshold=-inf`` every
    path refines exactly ``topk`` candidates whatever the weights. ``kam`` and any other
    attribute are the network's."""

    def __init__(self, net, seed: int = 0):
        self.net, self.seed, self._maps = net, seed, {}

    def __call__(self, x):
        out = dict(self.net(x))
        hm = out["heatmaps"].clone()
        key = (tuple(hm.shape[-2:]), hm.device, hm.dtype)
        if key not in self._maps:
            g = torch.Generator().manual_seed(self.seed)
            self._maps[key] = torch.rand(hm.shape[-2:], generator=g).to(hm.device, hm.dtype)
        hm[:, -1] = self._maps[key]
        out["heatmaps"] = hm
        return out

    def __getattr__(self, name):
        return getattr(self.net, name)


class TimedNet:
    """The network with the seconds spent in its forward calls summed in ``seconds`` (DEKR-like
    decoders call the network inside their decoding; this splits it off)."""

    def __init__(self, net, device):
        self.net, self.seconds, self.device = net, 0.0, torch.device(device)
        self.cuda = self.device.type == "cuda"

    def __call__(self, x):
        if self.cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = self.net(x)
        if self.cuda:
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - t
        return out

    def __getattr__(self, name):
        return getattr(self.net, name)


def build_predictors(model, meta, input_size: int, test_cfg: dict, paths=tuple(PATHS),
                     device="cpu", forced: bool = True, normalization=None) -> dict:
    """One Predictor per path on ``model`` (not modified: the fast paths fold copies).
    ``forced``: wrap each network in :class:`ForcedCenters` and ask for exactly ``topk``."""
    from ..predict import Predictor

    cfg = dict(test_cfg)
    if forced:
        cfg["center_threshold"] = -float("inf")
    out = {}
    for name in paths:
        if name not in PATHS:
            raise LogocapError(f"unknown path '{name}'; choose from {', '.join(PATHS)}")
        p = Predictor(model, meta, input_size, {**cfg, **PATHS[name]}, device,
                      normalization=normalization)
        if forced:
            p.net = ForcedCenters(p.net)
        p.net = TimedNet(p.net, device)
        out[name] = p
    return out


def with_topk(predictor, topk: int):
    """A shallow copy of a :func:`build_predictors` predictor (forced centers) that refines
    ``topk`` candidates: the same (folded) network, its own timer and test config."""
    if not isinstance(predictor.net, TimedNet) or not isinstance(predictor.net.net, ForcedCenters):
        raise LogocapError("with_topk needs a predictor built with forced centers")
    q = copy.copy(predictor)
    q.cfg = {**predictor.cfg, "topk": int(topk)}
    q.net = TimedNet(predictor.net.net, predictor.net.device)
    return q


def random_rescorer(meta, device="cpu", seed: int = 0):
    """A randomly initialised rescoring net (released init, seeded) for the keypoint set
    ``meta``: its predictions are meaningless, its time is the real one."""
    from ..models.rescore import RescoreNet, num_features

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = RescoreNet(num_features(meta))
    return net.to(device).eval()


def _stages(timings: dict, forward_s: float) -> dict:
    """Stage seconds of one call. A decoder that reports no network stage (an exported network,
    whose forward cannot be split) runs it inside "decode": the forward time (``forward_s``) is
    moved from "decode" to "network"."""
    t = dict(timings)
    if not any(k in t for k in NETWORK_STAGES):
        t["network"] = forward_s
        t["decode"] = t.get("decode", 0.0) - forward_s
    return t


def _network_s(run: dict) -> float:
    return sum(run.get(k, 0.0) for k in NETWORK_STAGES)


def time_paths(predictors: dict, prepared: list, iters: int = 3, warmup: int = 1,
               batch: int | None = None) -> dict:
    """Interleaved timing: every iteration runs each predictor once on its prepared images.

    ``predictors``: {key: predictor} (paths of one model, or of several models and candidate
    counts). ``prepared``: [(tensor, affine, size), ...] for all, or {key: [...]} per predictor
    (the same number of images each), fed ``batch`` at a time (default all at once; same-shape
    inputs share one forward pass). Returns {key: [{"wall", "cpu", <stage>: seconds, ...} per
    iteration]} (all images).
    """
    per = prepared if isinstance(prepared, dict) else {k: prepared for k in predictors}
    if set(per) != set(predictors) or len({len(v) for v in per.values()}) > 1:
        raise LogocapError("time_paths needs the same number of prepared images for every "
                           "predictor")
    n = len(next(iter(per.values())))
    b = batch or n
    chunks = {k: [tuple(zip(*v[i:i + b])) for i in range(0, n, b)] for k, v in per.items()}

    def run(key, p, timings=None):
        for tensors, affines, sizes in chunks[key]:
            p.predict_prepared(tensors, affines, sizes, timings=timings)

    for _ in range(warmup):
        for name, p in predictors.items():
            run(name, p)
    rec = {name: [] for name in predictors}
    for _ in range(iters):
        for name, p in predictors.items():
            timings: dict = {}
            p.net.seconds = 0.0
            c0, t0 = time.process_time(), time.perf_counter()
            run(name, p, timings)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            rec[name].append({"wall": wall, "cpu": cpu, **_stages(timings, p.net.seconds)})
    return rec


def summarize(rec: dict, images: int, reference: str = "reference") -> dict:
    """Per path: median ms per image (wall, CPU and per stage), the network part (the sum of
    its :data:`NETWORK_STAGES`) and the decode part (everything but the network), images/s, and
    the ratios to ``reference`` (median of per-iteration ratios)."""
    out = {}
    for name, runs in rec.items():
        keys = sorted({k for r in runs for k in r})
        med = {k: 1000.0 * statistics.median(r.get(k, 0.0) for r in runs) / images for k in keys}
        net = [_network_s(r) for r in runs]
        dec = [r["wall"] - x for r, x in zip(runs, net)]
        row = {"ms_per_image": med.pop("wall"), "cpu_ms_per_image": med.pop("cpu"),
               "stages_ms_per_image": med,
               "network_ms_per_image": 1000.0 * statistics.median(net) / images,
               "decode_ms_per_image": 1000.0 * statistics.median(dec) / images,
               "images_per_s": images / statistics.median(r["wall"] for r in runs),
               "iterations": len(runs)}
        if reference in rec and len(rec[reference]) == len(runs):
            ref = rec[reference]
            row["speedup_vs_reference"] = statistics.median(
                a["wall"] / b["wall"] for a, b in zip(ref, runs))
            row["cpu_speedup_vs_reference"] = statistics.median(
                a["cpu"] / b["cpu"] for a, b in zip(ref, runs))
            if _network_s(runs[0]) > 0:
                row["network_speedup_vs_reference"] = statistics.median(
                    _network_s(a) / _network_s(b) for a, b in zip(ref, runs))
        out[name] = row
    return out


def time_ratio(runs_a: list, runs_b: list, key: str = "wall") -> float:
    """Median over the iterations of one interleaved run of b's time / a's time (how many times
    faster a is than b); ``key`` a stage or "wall"."""
    pairs = [(a.get(key, 0.0), b.get(key, 0.0)) for a, b in zip(runs_a, runs_b)]
    if len(runs_a) != len(runs_b) or not pairs or any(ta <= 0 for ta, _ in pairs):
        raise LogocapError(f"time_ratio needs the iterations of one interleaved run with a "
                           f"positive '{key}' time")
    return statistics.median(tb / ta for ta, tb in pairs)


# ------------------------------------------------------------------------------- accuracy
def _match(a: np.ndarray, b: np.ndarray) -> list[tuple[int, int]]:
    """Greedy one-to-one matching of people a [Na, K, >=2], b [Nb, K, >=2] by mean joint
    distance (closest pairs first)."""
    if len(a) == 0 or len(b) == 0:
        return []
    d = np.linalg.norm(a[:, None, :, :2] - b[None, :, :, :2], axis=-1).mean(-1)
    pairs, used_a, used_b = [], set(), set()
    for flat in np.argsort(d, axis=None, kind="stable"):
        i, j = divmod(int(flat), d.shape[1])
        if i not in used_a and j not in used_b:
            pairs.append((i, j))
            used_a.add(i)
            used_b.add(j)
    return pairs


def compare_poses(ref: list, other: list, tol: float) -> dict:
    """Joints of ``other`` against ``ref`` (lists of Poses, image by image).

    Returns: images, people in each, joints (all joints of the larger set of people per image:
    an unmatched person's joints count as missed), ``within`` (joints closer than ``tol`` px),
    ``share`` = within / joints, ``max_err_px`` over matched people, ``same_people`` (every image
    has the same number of people) and ``max_score_diff`` over matched people.
    """
    joints = within = n_ref = n_other = 0
    max_err = max_score = 0.0
    same = True
    for a, b in zip(ref, other):
        ka, kb = np.asarray(a.keypoints, np.float64), np.asarray(b.keypoints, np.float64)
        n_ref, n_other = n_ref + len(ka), n_other + len(kb)
        same &= len(ka) == len(kb)
        k = ka.shape[1] if len(ka) else (kb.shape[1] if len(kb) else 0)
        joints += max(len(ka), len(kb)) * k
        for i, j in _match(ka, kb):
            err = np.linalg.norm(ka[i, :, :2] - kb[j, :, :2], axis=-1)
            within += int((err <= tol).sum())
            max_err = max(max_err, float(err.max()))
            max_score = max(max_score, abs(float(a.scores[i]) - float(b.scores[j])))
    return {"images": len(ref), "people_ref": n_ref, "people": n_other, "joints": joints,
            "within": within, "tolerance_px": tol, "share": within / joints if joints else 1.0,
            "max_err_px": max_err, "max_score_diff": max_score, "same_people": bool(same)}


# ------------------------------------------------------------------------------- inputs
def shared_assets() -> Path | None:
    """The folder of shared photos (``shared/assets`` beside or inside the checkout), if any."""
    repo = Path(__file__).resolve().parents[2]
    for cand in (repo.parent / "shared" / "assets", repo / "shared" / "assets"):
        if cand.is_dir():
            return cand
    return None


def load_photos(folder: Path | None) -> list[tuple[str, np.ndarray]]:
    """(name, RGB array) of the still images in ``folder`` (none when it is missing)."""
    from ..data.transforms import load_image

    if folder is None or not Path(folder).is_dir():
        return []
    out = []
    for p in sorted(Path(folder).iterdir()):
        if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp"):
            out.append((p.name, load_image(p)))
    return out
