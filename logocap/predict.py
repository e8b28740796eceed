"""Predictor: RGB images -> :class:`logocap.Poses` in original-image pixels.

One pass per batch: test transform (short side -> input size, long side to a multiple of 64),
normalisation, the decoder of the model's method family (``logocap.families``: the network
pass(es) with the flip test, decoding, pose NMS and the ``max_people`` cap), and back-projection.

Batches never pad: images whose network inputs differ in shape go through separate forward passes
(:meth:`Predictor.predict_prepared` groups them). Zero padding would change the results, because
HRNet's low-resolution branches see the whole canvas (measured on the synthetic checkpoints: an
image padded to a wider neighbour's size lost or gained people and moved joints by hundreds of
pixels), so a batch of B gives exactly what B single images give.

Test-time speed (``test.impl``, ``test.precision``): the network the Predictor calls
(``Predictor.net``, an :class:`~logocap.precision.InferenceModel`) is, with ``impl: fast``
(default), a copy of the model with its Conv2d -> BatchNorm2d pairs folded
(:func:`~logocap.models.fuse.fuse_conv_bn`) in channels_last memory format; ``impl: reference``
runs the model as given (NCHW, unfolded). ``precision: bf16`` runs the network and the CMP under
bfloat16 autocast; their outputs are cast to float32 before any decoding.
"""
from __future__ import annotations

import copy

import numpy as np
import torch

from .codecs.decode import to_original
from .config import DEFAULTS, validate_test_cfg
from .data.transforms import MEAN, STD, test_transform, warp_image
from .precision import InferenceModel, resolve_precision
from .meta import KeypointMeta, meta_for_model
from .structures import Poses
from .utils import LogocapError

__all__ = ["Predictor", "default_input_size", "prepare_image"]


def default_input_size(model_name: str) -> int:
    """The model's default test input size from its registry entry (the official sizes, notes 3.1:
    640 for W48 models, 512 for W32 and the small variants; the crop height for top-down ones);
    ``models.registry.DEFAULT_INPUT_SIZE`` for a name the registry does not know."""
    from .models.registry import DEFAULT_INPUT_SIZE, model_entry

    try:
        return model_entry(str(model_name)).input_size
    except LogocapError:
        return DEFAULT_INPUT_SIZE


def prepare_image(image, input_size: int, mean=MEAN, std=STD):
    """One image -> ``(tensor [3, H, W] float32 normalised, affine (2, 3) float64, (h, w))``.

    ``image``: an (H, W, 3) RGB array; grayscale, RGBA and 16-bit arrays are converted and images
    over the size limits of :mod:`logocap.sources` refused (LogocapError). Plain numpy / OpenCV /
    torch work only, so DataLoader workers can run it.
    """
    from .sources import to_rgb_uint8

    img = to_rgb_uint8(image)
    h, w = img.shape[:2]
    m, (ow, oh) = test_transform(h, w, input_size)
    warped = warp_image(img, m, (ow, oh))
    x = torch.from_numpy(np.ascontiguousarray(warped)).permute(2, 0, 1).float().div_(255.0)
    mean_t = torch.as_tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32).view(3, 1, 1)
    return (x - mean_t) / std_t, m, (h, w)


class Predictor:
    """Run a pose model on RGB uint8 images.

    ``test_cfg``: keys of ``config.DEFAULTS["test"]`` (flip, topk, center_threshold, nms_threshold,
    nms_num_joints, max_people, pose_nms, upsample, LOGO-CAP decoding keys), plus optionally
    ``flip_shift`` ("official" | "aligned", see ``codecs.decode.flip_fuse``). ``normalization``:
    {"mean", "std"} (RGB, for [0, 1] images), ImageNet by default. ``owns_model``: the Predictor
    may fold the model's BatchNorms in place (``impl: fast``) instead of folding a copy; leave it
    False for a model that is still used elsewhere (e.g. trained on after an evaluation).
    """

    def __init__(self, model: torch.nn.Module, meta: KeypointMeta | str = "coco", input_size: int = 512,
                 test_cfg: dict | None = None, device: str | torch.device = "cpu",
                 normalization: dict | None = None, owns_model: bool = False):
        self.meta = meta_for_model(model, meta)
        from .families import family_of
        try:  # the method family decodes (logocap.families)
            self.family = family_of(model)
        except LogocapError:
            self.family = None  # refused below, after the checks that name the network's kind
        if self.family is not None and self.family.topdown:
            raise LogocapError(f"{getattr(model, 'model_name', 'this model')} is a top-down model: "
                               "it needs person boxes (logocap predict --boxes boxes.json, or "
                               "logocap.topdown.TopDownPredictor)")
        if int(input_size) < 64 or int(input_size) % 64:
            raise LogocapError(f"input size must be a multiple of 64 (>= 64), got {input_size}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.input_size = int(input_size)
        # defaults < the family's test settings < test_cfg
        self.cfg = self.family.test_settings(test_cfg) if self.family is not None else \
            {**copy.deepcopy(DEFAULTS["test"]), **(test_cfg or {})}
        validate_test_cfg(self.cfg)
        self.net = self._inference_net(owns_model)
        if self.family is None or self.family.decode is None:
            raise LogocapError(f"{getattr(model, 'model_name', type(model).__name__)} belongs to no "
                               "method family that decodes whole images (logocap.families)")
        norm = normalization or {"mean": MEAN, "std": STD}
        self.mean = torch.tensor(norm["mean"], dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(norm["std"], dtype=torch.float32).view(3, 1, 1)
        # pose rescoring net (any method): new score = predicted OKS x pose score
        self.rescorer = None
        if self.cfg.get("rescore"):
            from .models.rescore import load_rescorer
            self.rescorer = load_rescorer(self.cfg["rescore"], self.meta, self.device)

    def _inference_net(self, owns_model: bool) -> InferenceModel:
        """The network as decoding calls it (module doc): folded + channels_last for
        ``impl: fast``, autocast for ``precision: bf16``, float32 NCHW outputs."""
        fast = self.cfg["impl"] == "fast"
        model = self.model
        if not isinstance(model, torch.nn.Module):  # another runtime (e.g. an exported network)
            if self.cfg["precision"] != "fp32":
                raise LogocapError(f"test.precision {self.cfg['precision']} needs a PyTorch "
                                   f"network; this one is a {type(model).__name__}")
            self.precision = resolve_precision("fp32", self.device, channels_last=False)
            return InferenceModel(model, self.precision)
        self.precision = resolve_precision(self.cfg["precision"], self.device, channels_last=fast)
        if fast:
            from .models.fuse import fuse_conv_bn
            model = fuse_conv_bn(model, inplace=owns_model, channels_last=True)
        if self.precision.name == "bf16":  # heads' output layers in fp32 (precision.py)
            from .precision import keep_fp32, precast_convs
            from .models.fuse import output_convs
            if not fast and not owns_model:
                model = copy.deepcopy(model)  # never patch the caller's network
            keep = output_convs(model)
            keep_fp32(model, keep)
            precast_convs(model, torch.bfloat16, keep)
        if fast and self.device.type == "cpu":
            from .models.pointwise import fuse_pointwise
            fuse_pointwise(model)  # conv + ReLU, conv + residual + ReLU as single oneDNN calls
        if owns_model:
            self.model = model
        return InferenceModel(model, self.precision)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_checkpoint(cls, path, model_name: str | None = None, device="cpu", **overrides):
        """Load a logocap checkpoint (metadata inside) or a plain state_dict (``model_name`` needed;
        COCO keypoints, input size 512 / 640 for W32 / W48, ImageNet normalisation).

        ``overrides``: ``input_size=...``, ``meta=...`` (plain state_dicts only) and any test-config
        key (``flip=False``, ``topk=...``); they win over the checkpoint's own config.
        """
        from .models.weights import build_model_from_checkpoint, load_checkpoint

        input_size = overrides.pop("input_size", None)
        meta = overrides.pop("meta", None)
        ckpt = load_checkpoint(path)
        model, kp_meta, info = build_model_from_checkpoint(ckpt, model_name, device, meta=meta)
        test_cfg = dict(((info.get("config") or {}).get("test") or {}))
        unknown = [k for k in overrides if k not in DEFAULTS["test"] and k != "flip_shift"]
        if unknown:
            raise LogocapError(f"unknown test option(s) {', '.join(unknown)}; known: "
                               f"{', '.join(sorted(DEFAULTS['test']))}, flip_shift")
        test_cfg.update(overrides)
        size = input_size or info.get("input_size") or default_input_size(info["model_name"])
        return cls(model, kp_meta, int(size), test_cfg, device, info.get("normalization"),
                   owns_model=True)

    # ------------------------------------------------------------------ inference
    def prepare(self, image):
        """One RGB image -> ``(tensor [3, H, W], affine (2, 3), (h, w))``; see :func:`prepare_image`."""
        return prepare_image(image, self.input_size, self.mean.view(-1).tolist(), self.std.view(-1).tolist())

    @torch.inference_mode()
    def decode(self, batch: torch.Tensor, timings: dict | None = None) -> dict:
        """Normalised input batch [B, 3, H, W] -> decoded candidates (input px) plus ``keep``.

        The model's family decodes (``MethodFamily.decode``). ``timings`` (optional dict)
        accumulates seconds per stage: "network" (forward of image + mirror, flip fusion), the
        LOGO-CAP decoder's "local_kems", "local_kams", "global_kams" (center-offset: "decode")
        and "pose_nms". DEKR, HGR and bottom-up SAR split the network by its ``stage_marks``
        ("backbone", "heads", "adaptive_convs" / "regression"; ``models.stages``) and put the
        flip fusion, candidates and pose NMS in "decode".
        """
        # the weights' dtype (float64 for a model trained in fp64), float32 otherwise
        dtype = next(self.model.parameters(), torch.empty(0)).dtype
        batch = batch.to(self.device, dtype=dtype if dtype.is_floating_point else torch.float32)
        return self.family.decode(self.net, batch, self.meta, self.cfg, timings)

    def predict_prepared(self, tensors, affines, sizes, timings: dict | None = None) -> list[Poses]:
        """Prepared images (see :meth:`prepare`) -> one :class:`Poses` per image, in order.

        Images whose tensors have the same shape share one forward pass; different shapes get
        separate passes, never padding (which would change the results, see the module doc).
        ``timings``: seconds per stage (:meth:`decode`'s, plus "rest": back-projection, scores,
        packaging, and "rescoring" when a rescoring net is set), summed over the passes.
        """
        tensors, sizes = list(tensors), list(sizes)
        affines = [np.asarray(a, np.float64) for a in affines]
        groups: dict[tuple, list[int]] = {}
        for i, t in enumerate(tensors):
            groups.setdefault(tuple(t.shape), []).append(i)
        out: list[Poses | None] = [None] * len(tensors)
        for idx in groups.values():
            batch = torch.stack([tensors[i] for i in idx])
            aff = torch.as_tensor(np.stack([affines[i] for i in idx]))
            for i, poses in zip(idx, self._predict_tensor(batch, aff, [sizes[i] for i in idx],
                                                          timings)):
                out[i] = poses
        return out

    def _predict_tensor(self, batch, affines, sizes, timings: dict | None = None) -> list[Poses]:
        """One forward pass of an unpadded batch [B, 3, H, W] -> B :class:`Poses`."""
        from .codecs.logocap_decode import _Ticker

        res = self.decode(batch, timings)
        tick = _Ticker(timings, self.device)
        # Pose NMS ran in input px; the test transform is a similarity, so the relative
        # (diagonal-based) NMS threshold gives the same result as in original px.
        orig = to_original(res["poses"], affines.to(res["poses"].device)).float().cpu()
        scores = res["scores"].float().cpu()
        if self.rescorer is not None:  # on the original-pixel poses, as released
            from .models.rescore import rescore_scores
            tick("rest")
            scores = rescore_scores(self.rescorer, orig, scores, self.meta)
            tick("rescoring")
        orig, scores = orig.numpy(), scores.numpy()
        keep = res["keep"].cpu().numpy()
        out = []
        for b, size in enumerate(sizes):  # packaging only: the decoding above is batched
            poses = Poses(orig[b][keep[b]], scores[b][keep[b]], self.meta, image_size=tuple(size))
            out.append(poses.sorted())
        tick("rest")
        return out

    def predict_batch(self, images) -> list[Poses]:
        """A list of RGB images -> one :class:`Poses` per image, sorted by score.

        Same-shape network inputs share a forward pass; the results equal those of single images.
        """
        images = list(images)
        if not images:
            return []
        prepared = [self.prepare(img) for img in images]
        return self.predict_prepared(*zip(*prepared))

    def predict(self, image) -> Poses:
        """One RGB uint8 image [H, W, 3] -> :class:`Poses` (original px, sorted by score)."""
        return self.predict_batch([image])[0]
