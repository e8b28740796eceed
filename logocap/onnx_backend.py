"""The ONNX Runtime backend: exported graphs (:mod:`logocap.export`) standing in for the torch
network, so that everything after the network (flip fusion, decoding, LOGO-CAP's candidate
selection and refinement, NMS, back-projection) stays the same torch code.

:class:`OnnxNetwork` behaves like the torch network for :class:`logocap.predict.Predictor`:
calling it on a normalised batch [B, 3, H, W] returns the same dict of tensors (on the input's
device); :class:`OnnxLogoCapNetwork` adds ``kam(local_kems)`` (the second graph; N = 0 is answered
without calling ONNX Runtime). Both have ``num_keypoints``, ``model_name``, ``family``, no-op
``to()`` / ``eval()`` and ``parameters()`` yielding nothing (so the Predictor feeds float32).

    net = load_network("model.onnx")                 # metadata inside the file
    predictor = load_predictor("model.onnx", flip=False)
    poses = predictor.predict(rgb_image)

Needs ``onnxruntime`` (``pip install logocap[export]``); the error without it says so.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .export import FORMAT, METADATA_KEY, default_onnx_path, require
from .utils import LogocapError

__all__ = ["OnnxNetwork", "OnnxLogoCapNetwork", "load_network", "load_predictor", "resolve_onnx_path",
           "BACKENDS"]

BACKENDS = ("torch", "onnxruntime")


def _providers(device: torch.device) -> list[str]:
    ort = require("onnxruntime")
    if device.type == "cpu":
        return ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise LogocapError(f"ONNX Runtime here cannot run on {device} (providers: "
                       f"{', '.join(ort.get_available_providers())}); use --device cpu, or install "
                       "onnxruntime-gpu for CUDA")


def _session(path: Path, device: torch.device):
    """-> (InferenceSession, logocap metadata dict) of one exported file."""
    ort = require("onnxruntime")
    if not path.is_file():
        raise LogocapError(f"ONNX file not found: {path}")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, torch.get_num_threads())  # follows --threads / OMP
    opts.log_severity_level = 3  # errors only
    try:
        sess = ort.InferenceSession(str(path), opts, providers=_providers(device))
    except LogocapError:
        raise
    except Exception as e:  # corrupt / truncated / not an ONNX file
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise LogocapError(f"cannot read ONNX file {path}: {first[:200]}") from None
    raw = sess.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    try:
        info = json.loads(raw) if raw else None
    except ValueError:
        info = None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise LogocapError(f"{path} holds no logocap metadata: export it with `logocap export`")
    return sess, info


def _run(sess, feed: dict, names: list[str], what: str):
    try:
        return sess.run(names, feed)
    except Exception as e:  # ONNX Runtime raises its own exception types
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise LogocapError(f"ONNX Runtime failed on the {what}: {first[:200]}") from None


class OnnxNetwork:
    """An exported network on ONNX Runtime, called like the torch network (see module doc)."""

    def __init__(self, path, device="cpu", _loaded=None):
        self.path = Path(path)
        self.device = torch.device(device)
        self._sess, self.info = _loaded or _session(self.path, self.device)
        if self.info.get("graph") != "network":
            raise LogocapError(f"{self.path} is the {self.info.get('graph')} graph of an export; "
                               f"give the network file ({self.info.get('network_file')})")
        self.model_name = self.info["model_name"]
        self.model_kwargs = self.info.get("model_kwargs") or {}
        self.family = self.info["family"]
        self.num_keypoints = int(self.info["num_keypoints"])
        self.stride = int(self.info.get("stride", 4))
        self.outputs = list(self.info["outputs"])
        if self.family == "topdown":  # what TopDownPredictor reads
            self.topdown = True
            self.input_hw = tuple(self.info.get("input_hw") or (256, 192))

    def __call__(self, x: torch.Tensor) -> dict:
        """Normalised batch [B, 3, H, W] -> dict of float32 tensors on ``x``'s device."""
        arr = x.detach().to("cpu", torch.float32).contiguous().numpy()
        outs = _run(self._sess, {self.info.get("input", "image"): arr}, self.outputs, "network")
        return {k: torch.from_numpy(v).to(x.device) for k, v in zip(self.outputs, outs)}

    forward = __call__

    # the nn.Module surface the predictors use
    def to(self, *args, **kwargs):
        return self

    def eval(self):
        return self

    def train(self, mode: bool = True):
        if mode:
            raise LogocapError("an ONNX Runtime network cannot be trained; use the checkpoint")
        return self

    def parameters(self):
        return iter(())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model_name}, {self.path.name}, {self.device})"


class OnnxLogoCapNetwork(OnnxNetwork):
    """LOGO-CAP: the network graph plus the KAM (message passing) graph."""

    def __init__(self, path, device="cpu", _loaded=None):
        super().__init__(path, device, _loaded)
        self.embed_dim = int(self.info["embed_dim"])
        self.kam_path = self.path.parent / self.info["kam_file"]
        self._kam, kinfo = _session(self.kam_path, self.device)
        if kinfo.get("export_id") != self.info.get("export_id"):
            raise LogocapError(f"{self.kam_path.name} does not belong to {self.path.name} (they come "
                               "from different exports): export again")

    def kam(self, local_kems: torch.Tensor) -> torch.Tensor:
        """Local KEMs [N, K*d, m, m] -> KAMs [N, K, m, m] (raw), as ``LogoCapModel.kam``."""
        k, d = self.num_keypoints, self.embed_dim
        if local_kems.dim() != 4 or local_kems.shape[1] != k * d:
            raise ValueError(f"kam() expects [N, {k * d}, m, m] local KEMs, got {tuple(local_kems.shape)}")
        n, _, mh, mw = local_kems.shape
        if n == 0:  # no candidates: nothing to run (ONNX Runtime is never called with N = 0)
            return local_kems.new_zeros((0, k, mh, mw))
        if mh * mw < 2:  # the exported Attentive Norm uses the unbiased variance (m >= 2)
            raise LogocapError("the exported KAM graph needs a local mesh of at least 2x2 "
                               f"(test.local_size >= 2), got {mh}x{mw}")
        arr = local_kems.detach().to("cpu", torch.float32).contiguous().numpy()
        (out,) = _run(self._kam, {"local_kems": arr}, ["kams"], "KAM graph")
        return torch.from_numpy(out).to(local_kems.device, local_kems.dtype)


def load_network(path, device="cpu") -> OnnxNetwork:
    """An exported ``model.onnx`` -> :class:`OnnxNetwork` (or the LOGO-CAP one, with its KAM graph)."""
    require("onnxruntime")
    path = Path(path)
    loaded = _session(path, torch.device(device))
    info = loaded[1]
    cls = OnnxLogoCapNetwork if info.get("family") == "logocap" and info.get("graph") == "network" \
        else OnnxNetwork
    return cls(path, device, loaded)


def resolve_onnx_path(weights=None, onnx=None) -> Path:
    """The ONNX file to run: ``onnx`` if given, ``weights`` if it is one, else where
    ``logocap export --weights W`` writes by default (W with the suffix ``.onnx``)."""
    if onnx:
        p = Path(onnx)
    elif weights and str(weights).endswith(".onnx"):
        p = Path(weights)
    elif weights:
        p = default_onnx_path(weights)
        if not p.is_file():
            raise LogocapError(f"no ONNX export of {weights} (looked for {p}): run `logocap export "
                               f"--weights {weights}` first, or give --onnx FILE")
    else:
        raise LogocapError("the onnxruntime backend needs an exported model: --onnx FILE "
                           "(or --weights of a checkpoint exported next to it)")
    if not p.is_file():
        raise LogocapError(f"ONNX file not found: {p}")
    return p


def load_predictor(path, device="cpu", meta=None, **overrides):
    """A :class:`logocap.predict.Predictor` on an exported model, configured from its metadata.

    ``overrides``: ``input_size=...`` and any test-config key (``flip=False``, ...), as for
    :meth:`Predictor.from_checkpoint`; ``meta`` only checks that the keypoints agree.
    """
    from .config import DEFAULTS
    from .meta import KeypointMeta, get_meta
    from .predict import Predictor, default_input_size

    net = load_network(path, device)
    info = net.info
    if net.family == "topdown":
        raise LogocapError(f"{Path(path).name} is a top-down model (person boxes needed); "
                           "bottom-up prediction cannot run it")
    kp_meta = KeypointMeta.from_dict(info["meta"])
    if meta is not None and not get_meta(meta).same_keypoints(kp_meta):
        raise LogocapError(f"the exported model predicts the '{kp_meta.name}' keypoints, "
                           f"not '{get_meta(meta).name}'")
    input_size = overrides.pop("input_size", None)
    unknown = [k for k in overrides if k not in DEFAULTS["test"] and k != "flip_shift"]
    if unknown:
        raise LogocapError(f"unknown test option(s) {', '.join(unknown)}; known: "
                           f"{', '.join(sorted(DEFAULTS['test']))}, flip_shift")
    test_cfg = {**(info.get("test") or {}), **overrides}
    size = input_size or info.get("input_size") or default_input_size(net.model_name)
    return Predictor(net, kp_meta, int(size), test_cfg, device, info.get("normalization"))


def choose_backend(backend: str | None, onnx=None, weights=None) -> str:
    """The backend a command runs: ``backend`` if given, else onnxruntime for an ONNX file
    (``--onnx`` or ``--weights *.onnx``) and torch otherwise."""
    is_onnx = bool(onnx) or str(weights or "").endswith(".onnx")
    if backend is None:
        return "onnxruntime" if is_onnx else "torch"
    if backend not in BACKENDS:
        raise LogocapError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "torch" and is_onnx:
        raise LogocapError("an ONNX file runs on the onnxruntime backend, not torch "
                           "(drop --backend torch, or give the checkpoint as --weights)")
    return backend


def add_backend_arguments(p) -> None:
    """``--backend`` / ``--onnx`` for the verbs that predict (predict, video)."""
    p.add_argument("--backend", default=None, choices=BACKENDS,
                   help="network backend; none = onnxruntime for an ONNX file (--onnx, or --weights "
                        "*.onnx), else torch. onnxruntime without --onnx runs the export of --weights "
                        "(<weights>.onnx, from `logocap export`); decoding is torch either way")
    p.add_argument("--onnx", default=None, metavar="FILE", help="exported network (`logocap "
                   "export`) to run on ONNX Runtime; --weights is then not needed")
