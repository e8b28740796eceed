"""Bottom-up SAR on the DEKR trunk (SAR notes §7): the loss targets and the decoder.

Targets (:func:`sar_pose_targets`): the SAR loss needs no target map. Each annotated person is
one pose sample: its joints in output px, which of them are visible (labelled and inside the
input), whether the person counts (a visible joint and, as DEKR's center rule, an area of at
least ``min_area`` input px^2), its center (mean of the visible joints, DEKR's) and its scale
(the diagonal of the visible joints' box, for the optional person-scale normalisation).

Decoding (:func:`decode_sar_dekr`): DEKR's pipeline (``codecs.dekr_decode``) with the center map
replaced by the selector's score map:

1. the network on the image and its 3 px-shifted mirror (one batch), the keypoint heatmaps, the
   pose maps and the selector LOGITS flipped back and averaged (``dekr_outputs``); every test
   scale (``run_scales``);
2. score map (``test.sar_score``): ``weights`` (default A) w_t = sigmoid(s_t) / sum over all
   cells of the image of sigmoid(s_u), so ``test.center_threshold`` (0.01) reads "at least 1 %
   of the image's selector mass"; ``sigmoid`` c_t = sigmoid(s_t); ``aux_center`` the sigmoid of
   the auxiliary center head (option B's proposal map; needs a model built with it);
3. the rest is DEKR's: max-pool NMS 3/5/7 by map size, top ``test.topk`` (30) cells with score >
   the threshold, pose = the cell's pose hypothesis x 4, joint score = score x keypoint heat,
   pose NMS ranked by the mean heat, multi-scale merging, optional heatmap matching; rescoring
   (``test.rescore``) is the Predictor's, as for every model.

Batched torch; the selector normalisation is per image (and per scale), so a batch decodes
exactly as its images one by one.
"""
from __future__ import annotations

import torch

from ..config import default_test_settings
from ..utils import LogocapError
from .dekr_decode import DEKR_KEYS, decode_dekr_outputs, dekr_test_cfg, run_scales

__all__ = ["SAR_SCORES", "sar_dekr_test_cfg", "sar_pose_targets", "selector_scores",
           "decode_sar_dekr_outputs", "decode_sar_dekr"]

SAR_SCORES = ("weights", "sigmoid", "aux_center")
MIN_AREA = 32.0 ** 2  # DEKR's center rule (data.min_center_area): smaller people are no sample


def sar_dekr_test_cfg(cfg: dict | None = None) -> dict:
    """DEKR's test settings plus ``sar_score``, checked."""
    out = dekr_test_cfg(cfg)
    score = (cfg or {}).get("sar_score") or default_test_settings(["sar_score"])["sar_score"]
    if score not in SAR_SCORES:
        raise LogocapError(f"test.sar_score must be one of {', '.join(SAR_SCORES)}, got {score!r}")
    out["sar_score"] = score
    return out


# --------------------------------------------------------------------------- targets
def sar_pose_targets(keypoints: torch.Tensor, areas: torch.Tensor, mask: torch.Tensor,
                     input_hw: tuple[int, int], stride: int = 4,
                     min_area: float = MIN_AREA) -> dict:
    """Ground truth of a training batch -> the pose samples of the SAR loss (output px).

    keypoints [B, M, K, 3] input px (v = 0 unlabelled; the collated ``gt_keypoints``), areas
    [B, M] input px^2 (``gt_areas``), mask [B, M] bool (``gt_mask``: a real person, not padding);
    ``input_hw`` the input size (H, W). Returns dict:
    - ``joints`` [B, M, K, 2] output px (0 where not visible: never NaN);
    - ``visible`` [B, M, K] bool: labelled and inside the input (0 <= x < W, 0 <= y < H, DEKR's
      test);
    - ``person`` [B, M] bool: real, at least one visible joint and area >= ``min_area``;
    - ``center`` [B, M, 2] output px: mean of the visible joints (DEKR's person center);
    - ``diag`` [B, M] output px: diagonal of the visible joints' box, at least 1.
    """
    if keypoints.dim() != 4 or keypoints.shape[-1] != 3:
        raise ValueError(f"keypoints must be [B, M, K, 3], got {tuple(keypoints.shape)}")
    if areas.shape != keypoints.shape[:2] or mask.shape != keypoints.shape[:2]:
        raise ValueError(f"areas {tuple(areas.shape)} / mask {tuple(mask.shape)} do not match "
                         f"keypoints {tuple(keypoints.shape)}")
    h, w = input_hw
    xy = keypoints[..., :2]
    visible = (keypoints[..., 2] > 0) & (xy[..., 0] >= 0) & (xy[..., 1] >= 0) & \
        (xy[..., 0] < w) & (xy[..., 1] < h) & mask.bool()[..., None]
    joints = torch.where(visible[..., None], xy / stride, torch.zeros_like(xy))
    vf = visible.to(joints.dtype)[..., None]
    count = vf.sum(2)  # [B, M, 1]
    center = (joints * vf).sum(2) / count.clamp(min=1.0)
    big, small = torch.finfo(joints.dtype).max, torch.finfo(joints.dtype).min
    lo = torch.where(visible[..., None], joints, torch.full_like(joints, big)).amin(2)
    hi = torch.where(visible[..., None], joints, torch.full_like(joints, small)).amax(2)
    ext = torch.where(count > 0, hi - lo, torch.zeros_like(hi))
    diag = ext.norm(dim=-1).clamp(min=1.0)
    person = visible.any(2) & (areas >= min_area)
    return {"joints": joints, "visible": visible, "person": person, "center": center,
            "diag": diag}


# --------------------------------------------------------------------------- decoding
def selector_scores(logits: torch.Tensor, mode: str = "weights") -> torch.Tensor:
    """Selector (or aux center) logits [B, h, w] -> the score map [B, h, w] of ``mode``:
    ``weights`` sigmoid normalised over every cell of each image (sums to 1 per image),
    ``sigmoid`` / ``aux_center`` the plain sigmoid."""
    if mode not in SAR_SCORES:
        raise LogocapError(f"test.sar_score must be one of {', '.join(SAR_SCORES)}, got {mode!r}")
    c = torch.sigmoid(logits)
    if mode == "weights":
        c = c / c.flatten(1).sum(1).view(-1, 1, 1)
    return c


class _ScoreChannel:
    """The network with the auxiliary center logits moved into channel K of ``heatmaps`` (where
    the DEKR helpers read the center map), for ``sar_score=aux_center``. Other attributes are the
    network's."""

    def __init__(self, net):
        self.net = net

    def __call__(self, x):
        out = dict(self.net(x))
        if out.get("aux_center") is None:
            raise LogocapError("test.sar_score=aux_center needs a model built with the auxiliary "
                               "center head (model.kwargs.aux_center=true)")
        hm = out["heatmaps"]
        out["heatmaps"] = torch.cat([hm[:, :-1], out["aux_center"].to(hm.dtype)], dim=1)
        return out

    def __getattr__(self, name):
        return getattr(self.net, name)


def decode_sar_dekr_outputs(per_scale, input_hw: tuple[int, int], meta,
                            cfg: dict | None = None) -> dict:
    """Flip-fused maps of every test scale -> scored poses and ``keep`` (input px).

    ``per_scale``: [(scale, heatmaps [B, K+1, h, w] with channel K = the selector (or aux) LOGITS,
    posemap [B, K, 2, h, w] output px)]. Channel K becomes the ``sar_score`` map, then DEKR's
    :func:`~logocap.codecs.dekr_decode.decode_dekr_outputs` (its dict: poses [B, N, K, 3], scores,
    rank, valid, keep, heatmaps_avg with the score map in channel K).
    """
    cfg = sar_dekr_test_cfg(cfg)
    scored = [(s, torch.cat([hm[:, :-1], selector_scores(hm[:, -1], cfg["sar_score"])[:, None]],
                            dim=1), pm) for s, hm, pm in per_scale]
    return decode_dekr_outputs(scored, input_hw, meta, {k: cfg[k] for k in DEKR_KEYS})


def decode_sar_dekr(model, images_by_scale: dict, meta, cfg: dict | None = None,
                    tick=None) -> dict:
    """Run a SAR-on-DEKR model on the images of every test scale and decode (module docstring).

    ``images_by_scale``: {scale: normalised batch [B, 3, H_s, W_s]}. Returns
    :func:`decode_sar_dekr_outputs`'s dict plus ``raw`` (the scale-1 network outputs).
    ``tick``: the stage timer of ``run_scales``.
    """
    cfg = sar_dekr_test_cfg(cfg)
    net = _ScoreChannel(model) if cfg["sar_score"] == "aux_center" else model
    per_scale, raw, hw = run_scales(net, images_by_scale, meta, cfg, tick)
    res = decode_sar_dekr_outputs(per_scale, hw, meta, cfg)
    res["raw"] = raw
    return res
