"""Pose rescoring net (DEKR ``PredictOKSNet``; the seed paper's "joint shape and heat value
scoring"; notes 10.3 step 9): predicts a pose's OKS from its shape and joint scores.

Features of a pose [K, 3] (x, y, joint score), for the limbs of ``meta.rescore_limbs``:
  - the L limb vectors joint a - joint b (dx, dy interleaved per limb), divided by the scale;
  - the L limb lengths, divided by the scale;
  - the K joint scores;
scale = mean length of the scale limbs (COCO: the two shoulder-hip sides), floored at 1 px.
COCO: 19 limbs -> 74 features, CrowdPose: 15 limbs -> 59. The features are invariant to
translation and (above the 1 px floor) to scale, so original or input pixels give the same.

Net: Linear(F, 256) - ReLU - Linear(256, 256) - ReLU - Linear(256, 1), keys ``l1`` / ``l2`` / ``l3``
as released, so ``final_rescore_coco_kpt.pth`` / ``final_rescore_crowd_pose_kpt.pth`` load
strictly. New score = predicted OKS x the decoder's pose score (a NaN prediction counts 0).

Files: a released plain state_dict, or our format (:func:`save_rescorer`)
``{"format": "logocap-rescore", "state_dict", "meta", "limbs", "scale_limbs", "hidden", ...}``.
A file whose feature size or keypoint set does not fit the model's is refused with one line.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..meta import KeypointMeta, rescore_limbs
from ..utils import LogocapError, atomic_torch_save
from .weights import read_weights

__all__ = ["RescoreNet", "rescore_features", "num_features", "load_rescorer", "save_rescorer",
           "rescore_scores", "RESCORE_FORMAT"]

RESCORE_FORMAT = "logocap-rescore"


def num_features(meta: KeypointMeta) -> int:
    limbs, _ = rescore_limbs(meta)
    return 3 * len(limbs) + meta.num_keypoints


def rescore_features(poses: torch.Tensor, meta: KeypointMeta) -> torch.Tensor:
    """poses [..., K, 3] (x, y, joint score) -> features [..., 3 L + K] (see the module doc)."""
    limbs, scale_limbs = rescore_limbs(meta)
    if poses.shape[-2] != meta.num_keypoints or poses.shape[-1] < 3:
        raise ValueError(f"poses must be [..., {meta.num_keypoints}, 3], got {tuple(poses.shape)}")
    a = torch.as_tensor([p[0] for p in limbs], device=poses.device)
    b = torch.as_tensor([p[1] for p in limbs], device=poses.device)
    vec = poses[..., a, :2] - poses[..., b, :2]  # [..., L, 2]
    length = vec.norm(dim=-1)  # [..., L]
    scale = length[..., list(scale_limbs)].mean(-1, keepdim=True).clamp_min(1.0)
    return torch.cat([(vec / scale[..., None]).flatten(-2), length / scale, poses[..., 2]], dim=-1)


class RescoreNet(nn.Module):
    """features [N, F] -> predicted OKS [N] (raw, not clamped, as released)."""

    def __init__(self, in_features: int, hidden: int = 256):
        super().__init__()
        self.in_features, self.hidden = int(in_features), int(hidden)
        self.l1 = nn.Linear(in_features, hidden)
        self.l2 = nn.Linear(hidden, hidden)
        self.l3 = nn.Linear(hidden, 1)
        self.relu = nn.ReLU()
        for m in (self.l1, self.l2, self.l3):  # the released init
            nn.init.kaiming_uniform_(m.weight, a=1)
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l3(self.relu(self.l2(self.relu(self.l1(x)))))[..., 0]


def rescore_scores(net: RescoreNet, poses: torch.Tensor, scores: torch.Tensor,
                   meta: KeypointMeta) -> torch.Tensor:
    """New pose scores = predicted OKS x ``scores``. poses [..., K, 3], scores [...]."""
    feat = rescore_features(poses.float(), meta)
    p = next(net.parameters())
    with torch.no_grad():
        oks = net(feat.to(p.device, p.dtype)).to(scores.device, scores.dtype)
    return torch.nan_to_num(oks, nan=0.0) * scores


def save_rescorer(path, net: RescoreNet, meta: KeypointMeta, extra: dict | None = None) -> None:
    """Write a rescoring net with its keypoint set and limbs (atomically)."""
    limbs, scale_limbs = rescore_limbs(meta)
    ckpt = {"format": RESCORE_FORMAT, "state_dict": {k: v.detach().cpu() for k, v in
                                                      net.state_dict().items()},
            "meta": meta.to_dict(), "limbs": [list(p) for p in limbs],
            "scale_limbs": list(scale_limbs), "hidden": net.hidden}
    ckpt.update(extra or {})
    atomic_torch_save(ckpt, path)


def load_rescorer(source, meta: KeypointMeta, device="cpu") -> RescoreNet:
    """A rescoring net for the keypoint set ``meta`` from a file (or a loaded dict).

    Accepts the released plain state_dict (``l1/l2/l3``) and our format. Refused (LogocapError,
    one line): unreadable files, other layouts, and nets for another keypoint set (another
    feature size, or our format naming other keypoints or limbs).
    """
    name = "rescoring weights"
    if isinstance(source, (str, Path)):
        path = Path(source)
        source = read_weights(path, "rescoring file")
        name = f"rescoring file {path.name}"
    if not isinstance(source, dict):
        raise LogocapError(f"{name} holds a {type(source).__name__}, not a state_dict")
    sd = source.get("state_dict") if source.get("format") == RESCORE_FORMAT else source
    if not isinstance(sd, dict):
        raise LogocapError(f"{name} holds no state_dict")
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
    keys = {"l1.weight", "l1.bias", "l2.weight", "l2.bias", "l3.weight", "l3.bias"}
    if set(sd) != keys or not all(torch.is_tensor(v) for v in sd.values()) or sd["l1.weight"].dim() != 2:
        raise LogocapError(f"{name} is not a rescoring net (expected the keys "
                           f"{', '.join(sorted(keys))}, got {', '.join(sorted(map(str, sd)))[:200]})")
    want = num_features(meta)
    hidden, got = sd["l1.weight"].shape
    if source.get("format") == RESCORE_FORMAT:
        saved = source.get("meta") or {}
        limbs, _ = rescore_limbs(meta)
        if tuple(saved.get("keypoint_names", ())) != meta.keypoint_names or \
                [tuple(p) for p in source.get("limbs", [])] != list(limbs):
            raise LogocapError(f"{name} was trained for the keypoint set "
                               f"'{saved.get('name', '?')}' ({len(saved.get('keypoint_names', []))} "
                               f"keypoints), not '{meta.name}' ({meta.num_keypoints})")
    if got != want:
        raise LogocapError(f"{name} takes {got} features, but the keypoint set '{meta.name}' "
                           f"({meta.num_keypoints} keypoints, {len(rescore_limbs(meta)[0])} limbs) "
                           f"gives {want}: it was trained for another keypoint set")
    net = RescoreNet(got, hidden)
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise LogocapError(f"{name} does not fit a rescoring net: {str(e).splitlines()[0]}") from None
    return net.to(device).eval()
