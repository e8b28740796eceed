"""Configs: nested dicts with defaults, YAML files, and dotted ``key=value`` overrides.

A config is translated into explicit constructor arguments at the edge (commands/, engine/);
no module reads a global config.

    cfg = load_config("configs/logocap_hrnet_w32_512_coco.yaml", ["train.epochs=10", "model.name=..."])
"""
from __future__ import annotations

import copy
from pathlib import Path

import yaml

from .utils import LogocapError

__all__ = ["DEFAULTS", "load_config", "apply_overrides", "merge", "dump_config", "validate_test_cfg",
           "default_test_settings"]

# Every key a config may set, with its default. Unknown keys are an error (typos must not pass).
DEFAULTS: dict = {
    "model": {
        "name": "center_offset_hrnet_tiny",
        "kwargs": {},  # overrides passed to create_model (e.g. width, cmp widths)
        "pretrained": None,  # ImageNet HRNet file or a logocap/official checkpoint
    },
    "data": {
        "root": "data/synthetic",  # folder with annotations/ and images/
        "dataset": "synthetic",  # coco | ochuman | crowdpose | synthetic (sets keypoint meta)
        "train_ann": "annotations/person_keypoints_train.json",
        "train_images": "images/train",
        "val_ann": "annotations/person_keypoints_val.json",
        "val_images": "images/val",
        "input_size": 256,
        "num_workers": 0,
        # augmentation (papers: rot +-30, scale 0.75-1.5, translate 40 px x scale, flip 0.5)
        "max_rotation": 30.0,
        "min_scale": 0.75,
        "max_scale": 1.5,
        "max_translate": 40.0,
        "flip_prob": 0.5,
        # targets (notes 4.2)
        "sigma": 2.0,
        "center_sigma": 4.0,
        "bg_weight": 0.1,
        "offset_radius": 4,
        "min_center_area": 1024.0,  # 32^2
        # None = the method's own: shared / segmentation; DEKR per_channel / keypoint_box (notes 10.2)
        "heatmap_weights": None,  # shared | per_channel
        "offset_area": None,  # segmentation | keypoint_box (DEKR's quirk) | instance_box (HGR)
        "max_images": None,  # limit the number of images (debug / quick runs)
    },
    "train": {
        "epochs": 140,
        "batch_size": 12,  # per process
        "lr": 1.0e-3,
        "lr_steps": [90, 120],  # in epochs of a 140-epoch schedule; scaled to `epochs`
        "lr_steps_of": 140,
        "lr_gamma": 0.1,
        "weight_decay": 0.0,
        "precision": "auto",  # auto | fp32 | bf16 | fp16 (CUDA) | fp64; auto = bf16 where native
        "channels_last": "auto",  # auto (on except fp64) | true | false
        "seed": 0,
        "eval_every": 1,  # epochs; 0 = never
        "log_every": 10,  # iterations
        "out": "runs/train",
        "resume": False,
        "max_iters_per_epoch": None,
        "sync_bn": True,  # synchronise BatchNorm across processes under torchrun
        "warmup_iters": 0,  # linear lr warm-up from 0.001 x lr over the first N iterations; 0 = off
    },
    "loss": {
        "heatmap": 1.0,
        "offset": None,  # None = the method's own: 0.01 (center-offset, LOGO-CAP), 0.03 (DEKR)
        "kam": 0.01,  # LOGO-CAP OKS/KAM loss factor
        "refined": 1.0,  # LOGO-CAP refined heatmap loss factor
        "oks_loss": True,  # Table 5 switch
        "refined_sigma": 4.0,  # input px (official code)
        # SAR (losses/sar.py): Laplacian kernel sharpness in map-normalised units, loss form
        "sar_lambda": 16.0,
        "sar_form": "reference",  # reference (-log(sum w r + 1e-6), released) | logsumexp
        # bottom-up SAR on DEKR (losses/sar_dekr.py, docs/SAR.md): the selector's normalisation
        # domain (image: every cell, notes §7 default A | person: option B, cells near the
        # person's center), person-scale normalisation of the pose-level kernel, and the smallest
        # person (input px^2; DEKR's center rule) that is a pose sample
        "sar_normalise": "image",
        "sar_scale_norm": False,
        "sar_min_area": 1024.0,
        # HGR (losses/hgr.py): Table 4's tradeoff switch (true: Eqn. 4, weight 1 inside each
        # joint's own region and data.bg_weight outside; false: plain MSE) and the center factor
        "tradeoff": True,
        "center": 1.0,  # center-heatmap term (Eqn. 5 read literally puts it under lambda: 0.01;
        # also the factor of SAR-on-DEKR's auxiliary center loss when the model has that head)
    },
    "test": {
        "flip": True,
        "topk": 30,
        "center_threshold": 0.01,
        "nms_threshold": 0.05,
        "nms_num_joints": None,  # None = K // 2 (8 for COCO-17, as the released code)
        "max_people": 30,
        "pose_nms": "official",  # official (the released nms_core walk) | greedy (score-ordered)
        "upsample": "official",  # official (align_corners=False) | aligned
        "flip_shift": "official",  # official (no shift, as released) | aligned (undo the 0.75 px flip shift)
        "center_kernel": 3,  # center NMS max-pool on the input-resolution center map
        "sample_mode": None,  # bilinear gather: None = follow `upsample` (official | clean)
        # LOGO-CAP decoding
        "adaptation": "full",  # none | kems | partial | full (Table 7; see docs/LOGOCAP.md)
        "local_size": 11,
        "global_size": 97,
        "gaussian_reweigh": True,
        "gaussian_sigma": 16.0,
        "top2_lambda": 0.75,
        "window_scale": 1.0,  # multiply mesh steps / global window at small inputs
        # fast: conv+BN folded, channels_last, separable global-KEM gather (same outputs within
        # float rounding); reference: the plain network in NCHW and the per-point gather
        "impl": "fast",  # fast | reference (the baseline of `logocap bench speed`)
        "precision": "fp32",  # fp32 | bf16 (network + CMP under bfloat16 autocast; decoding fp32)
        # DEKR decoding (codecs/dekr_decode.py; the keys above it reads: flip, topk,
        # center_threshold, nms_threshold, nms_num_joints, max_people, pose_nms)
        "scales": [1.0],  # multi-scale test, e.g. [0.5, 1.0, 2.0]; must include 1.0
        "scale_decrease": 0.9,  # other scales' center scores -> scale-1 max x this (CrowdPose 0.8)
        "match_heatmap": False,  # snap joints to heat peaks + Gaussian fit (TEST.MATCH_HMP)
        "rescore": None,  # pose rescoring net file (any method; models/rescore.py), None = off
        # HGR grouping (codecs/hgr_decode.py, paper 3.2): each regressed joint absorbs the nearest
        # heat peak of its type within this many input px; 0 = the regressed poses alone
        "group_radius": 75.0,
        # bottom-up SAR (codecs/sar_dekr.py): the proposal score map; weights = sigmoid
        # normalised over the image (center_threshold is then a share of the image's mass) |
        # sigmoid | aux_center (the auxiliary center head, option B)
        "sar_score": "weights",
    },
}


def merge(base: dict, update: dict, path: str = "", strict: bool = True) -> dict:
    """Recursively merge ``update`` into a copy of ``base``; unknown keys raise in strict mode."""
    out = copy.deepcopy(base)
    for k, v in (update or {}).items():
        key = f"{path}{k}"
        if k not in out:
            if strict:
                raise LogocapError(f"unknown config key '{key}'")
            out[k] = copy.deepcopy(v)
        elif isinstance(out[k], dict) and k != "kwargs":
            if not isinstance(v, dict):
                raise LogocapError(f"config key '{key}' is a section, got {v!r}")
            out[k] = merge(out[k], v, key + ".", strict)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _parse_value(text: str):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(cfg: dict, overrides: list[str] | None) -> dict:
    """Apply ``a.b.c=value`` overrides; values are parsed as YAML (numbers, lists, null, bools)."""
    cfg = copy.deepcopy(cfg)
    for ov in overrides or []:
        if "=" not in ov:
            raise LogocapError(f"override '{ov}' is not of the form key=value")
        key, val = ov.split("=", 1)
        parts = key.strip().split(".")
        node = cfg
        for i, p in enumerate(parts[:-1]):
            if not isinstance(node, dict) or p not in node:
                raise LogocapError(f"unknown config key '{'.'.join(parts[:i + 1])}' in override '{ov}'")
            node = node[p]
        last = parts[-1]
        in_kwargs = len(parts) >= 2 and parts[-2] == "kwargs"
        if not isinstance(node, dict) or (last not in node and not in_kwargs):
            raise LogocapError(f"unknown config key '{key}' in override '{ov}'")
        if isinstance(node.get(last), dict) and last != "kwargs":
            raise LogocapError(f"config key '{key}' is a section; override its fields instead")
        node[last] = _parse_value(val)
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> dict:
    cfg = copy.deepcopy(DEFAULTS)
    if path:
        path = Path(path)
        if not path.is_file():
            raise LogocapError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise LogocapError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
        if not isinstance(data, dict):
            raise LogocapError(f"config file {path} must hold a mapping at the top level")
        cfg = merge(cfg, data)
    return apply_overrides(cfg, overrides)


def dump_config(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)


# ------------------------------------------------------------------------------- test settings
def default_test_settings(keys=None) -> dict:
    """A copy of ``DEFAULTS["test"]`` (only ``keys`` when given): the one home of the test-time
    defaults; the decoders fill missing keys from here and the method families
    (``logocap.families``) put their own overrides on top."""
    t = DEFAULTS["test"]
    return copy.deepcopy(t if keys is None else {k: t[k] for k in keys})


def _number(cfg: dict, key: str, integer: bool = False):
    v = cfg[key]
    ok = isinstance(v, int) if integer else isinstance(v, (int, float))
    if isinstance(v, bool) or not ok or (not integer and v != v):  # bools are ints; v != v: NaN
        raise LogocapError(f"test.{key} must be {'an integer' if integer else 'a number'}, got {v!r}")
    return v


def validate_test_cfg(test: dict) -> dict:
    """Check the test (decoding) settings up front; LogocapError naming the first bad key.

    Called by every verb that decodes (predict, eval, train, upper-bound) before any model runs,
    so a bad value is one clear line instead of a traceback or a silent AP of 0. Only the keys
    present are checked (a partial dict is fine). Returns ``test`` unchanged.
    """
    from .codecs.decode import FLIP_SHIFTS, UPSAMPLE_MODES
    from .codecs.logocap_decode import ADAPTATIONS, IMPLS
    from .codecs.mesh import SAMPLE_MODES
    from .codecs.nms import POSE_NMS_METHODS
    from .precision import TEST_PRECISIONS

    t = dict(test or {})
    choices = {"upsample": UPSAMPLE_MODES, "flip_shift": FLIP_SHIFTS, "adaptation": ADAPTATIONS,
               "sample_mode": (None,) + tuple(SAMPLE_MODES), "pose_nms": POSE_NMS_METHODS,
               "impl": IMPLS, "precision": TEST_PRECISIONS}
    for key, allowed in choices.items():
        if key in t and t[key] not in allowed:
            names = ", ".join("null" if a is None else str(a) for a in allowed)
            raise LogocapError(f"test.{key} must be one of {names}; got {t[key]!r}")
    for key in ("flip", "gaussian_reweigh", "match_heatmap"):
        if key in t and not isinstance(t[key], bool):
            raise LogocapError(f"test.{key} must be true or false, got {t[key]!r}")
    for key in ("topk", "max_people"):
        if key in t and _number(t, key, integer=True) < 1:
            raise LogocapError(f"test.{key} must be >= 1, got {t[key]}")
    if t.get("nms_num_joints") is not None and _number(t, "nms_num_joints", integer=True) < 0:
        raise LogocapError(f"test.nms_num_joints must be >= 0 or null, got {t['nms_num_joints']}")
    for key, low in (("center_kernel", 1), ("local_size", 1), ("global_size", 3)):
        if key in t:
            v = _number(t, key, integer=True)
            if v < low or v % 2 == 0:
                raise LogocapError(f"test.{key} must be an odd number >= {low}, got {v}")
    for key in ("gaussian_sigma", "window_scale", "nms_threshold"):
        if key in t and not _number(t, key) > 0:
            raise LogocapError(f"test.{key} must be > 0, got {t[key]}")
    for key in ("center_threshold", "top2_lambda"):
        if key in t:
            _number(t, key)
    return test

