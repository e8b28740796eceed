"""ONNX export: a checkpoint's network -> ``model.onnx`` (+ ``model.kam.onnx`` for LOGO-CAP).

What is exported is the network only (habit 1: networks return raw tensors), so decoding stays the
same torch code for both backends (see :mod:`logocap.onnx_backend`):

- ``model.onnx``: image batch ``image`` [B, 3, H, W] (normalised RGB, H and W multiples of 32)
  -> the model's output dict as named outputs (``heatmaps``, ``offsets``, ``embedding`` for
  LOGO-CAP, ...), dynamic B, H, W (top-down models: dynamic B, crops of the model's own size);
- ``model.kam.onnx`` (LOGO-CAP only): the message passing ``model.kam``, local KEMs
  ``local_kems`` [N, K*d, m, m] -> ``kams`` [N, K, m, m], dynamic N and m (the candidates vary
  per image). N = 0 never reaches ONNX Runtime: the backend answers it without a call.

Both files carry the checkpoint's metadata as ``metadata_props["logocap"]`` (a JSON string:
model name and kwargs, family, keypoint meta, input size, normalisation, the checkpoint's test
settings, output names, the KAM file name and an ``export_id`` shared by the pair), so the
backend needs nothing else. Each export is checked before anything is written: ONNX Runtime runs
the graphs on inputs of another batch size and image size than the traced ones and must agree
with torch (relative difference below ``TOLERANCE``); then the files are written atomically, the
KAM graph first, so a crash never leaves a network file pointing at a half-written KAM file (a
stale pair is caught by the export id).

Exporters: ``torchscript`` (``torch.onnx.export(..., dynamo=False)``, the tracing exporter) or
``dynamo`` (``torch.export``-based, torch's default since 2.9). ``auto`` (default) uses the
TorchScript one and falls back to dynamo when it fails or its graph fails the check (a shape that
tracing froze into a constant would): both give the same ONNX Runtime outputs on our networks, but
on the 2-core CPU used here dynamo took ~2 minutes for ``center_offset_hrnet_tiny`` and ~10 for
``dekr_hrnet_tiny``, TorchScript 2-8 s and 30-60 s.
"""
from __future__ import annotations

import copy
import json
import tempfile
import time
import uuid
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .utils import LogocapError, atomic_write_bytes

__all__ = ["export_checkpoint", "export_model", "family_of", "kam_path_for", "default_onnx_path",
           "require", "EXPORTERS", "OPSET", "TOLERANCE", "METADATA_KEY"]

EXPORTERS = ("auto", "torchscript", "dynamo")
OPSET = 18  # >= 16 for GridSample (DEKR's adaptive convolution), >= 18 for the dynamo exporter
TOLERANCE = 1e-3  # max |onnx - torch| / max |torch| per output in the post-export check
METADATA_KEY = "logocap"
FORMAT = "logocap-onnx"
TRACE_SHAPE = (2, 3, 128, 192)  # traced input; the check runs another batch size and image size
CHECK_SHAPE = (1, 3, 64, 128)
KAM_TRACE_N, KAM_CHECK_N = 3, 5


def require(*modules: str):
    """Import the optional ONNX packages, or one clear line naming the extra."""
    out = []
    for name in modules:
        try:
            out.append(__import__(name))
        except ImportError:
            raise LogocapError(f"this needs the '{name}' package, which is not installed: "
                               "pip install logocap[export]  (onnx, onnxruntime, onnxscript)") from None
    return out[0] if len(out) == 1 else out


def default_onnx_path(weights) -> Path:
    """Where ``logocap export --weights W`` writes by default: W with the suffix ``.onnx``."""
    return Path(weights).with_suffix(".onnx")


def kam_path_for(onnx_path) -> Path:
    """``model.onnx`` -> ``model.kam.onnx`` (LOGO-CAP's message-passing graph)."""
    p = Path(onnx_path)
    return p.with_name(p.name[: -len(".onnx")] + ".kam.onnx")


def family_of(model) -> str:
    """The method family of a network as the exported metadata names it (``logocap.families``;
    "topdown" for a top-down family, as the ONNX Runtime backend reads it)."""
    fam = getattr(model, "family", None)
    if isinstance(fam, str):
        return fam
    from .families import family_of as method_family
    family = method_family(model)
    return "topdown" if family.topdown else family.name


class _Outputs(nn.Module):
    """The network with its output dict flattened to a tuple in a fixed key order."""

    def __init__(self, net: nn.Module, keys: list[str]):
        super().__init__()
        self.net, self.keys = net, list(keys)

    def forward(self, x):
        out = self.net(x)
        return tuple(out[k] for k in self.keys)


class _Kam(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.kam(x)


def _export_graph(module: nn.Module, sample: torch.Tensor, input_name: str, output_names: list[str],
                  dims: dict, exporter: str, opset: int, folder: Path, info: dict, check):
    """One module -> (serialised ONNX model with ``info`` as metadata, the exporter used, the
    check's worst relative difference).

    ``dims``: input axis -> (name, multiple) for the dynamic axes; outputs share the batch axis
    name and get their own names for the others. ``check(data) -> float`` runs the graph on ONNX
    Runtime and raises LogocapError when it disagrees with torch; with ``exporter="auto"`` a
    TorchScript graph that fails (or fails the check, e.g. a shape traced into a constant) is
    exported again with dynamo.
    """
    import onnx

    path = folder / f"{input_name}.onnx"
    order = ["torchscript", "dynamo"] if exporter == "auto" else [exporter]
    errors = []
    for kind in order:
        try:
            with warnings.catch_warnings():  # tracer / deprecation chatter, not the user's business
                warnings.simplefilter("ignore")
                if kind == "torchscript":
                    axes = {input_name: {a: n for a, (n, _) in dims.items()}}
                    for o in output_names:
                        axes[o] = {a: (n if a == 0 else f"{o}_{n}") for a, (n, _) in dims.items()}
                    torch.onnx.export(module, (sample,), str(path), input_names=[input_name],
                                      output_names=output_names, dynamic_axes=axes,
                                      opset_version=opset, do_constant_folding=True, dynamo=False)
                else:
                    from torch.export import Dim
                    made, shapes = {}, {}
                    for a, (n, mult) in dims.items():  # axes of the same name share one Dim
                        d = made.setdefault(n, Dim(n, min=1 if a == 0 else 2, max=1 << 16))
                        shapes[a] = d if mult == 1 else mult * d
                    prog = torch.onnx.export(module, (sample,), input_names=[input_name],
                                             output_names=output_names, dynamic_shapes={"x": shapes},
                                             opset_version=max(opset, 18), dynamo=True, verbose=False)
                    prog.save(str(path))
            proto = onnx.load(str(path), load_external_data=True)
        except Exception as e:  # exporter failures come in many types
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            errors.append(f"{kind}: {type(e).__name__}: {first[:200]}")
            continue
        data = _with_metadata(proto, {**info, "exporter": kind})
        try:
            return data, kind, check(data)
        except LogocapError as e:
            errors.append(f"{kind}: {e}")
    raise LogocapError(f"ONNX export of {type(module.net).__name__} failed ({'; '.join(errors)})")


def _with_metadata(proto, info: dict) -> bytes:
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(info)
    proto.producer_name = "logocap"
    data = proto.SerializeToString()
    if len(data) >= 2 ** 31:
        raise LogocapError("the network is larger than 2 GB, the limit of one ONNX file")
    return data


def _check(data: bytes, inputs: dict, expected: list[torch.Tensor], names: list[str], what: str) -> float:
    """Run the serialised graph on ONNX Runtime; the worst relative difference to torch."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, torch.get_num_threads())
    sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    got = sess.run(names, {k: v.numpy() for k, v in inputs.items()})
    worst = 0.0
    for name, g, e in zip(names, got, expected):
        e = e.detach().float().numpy()
        if g.shape != e.shape:
            raise LogocapError(f"exported {what} gives {name} of shape {g.shape}, torch {e.shape}")
        rel = float(np.abs(g - e).max() / (np.abs(e).max() + 1e-12)) if e.size else 0.0
        if not np.isfinite(rel) or rel > TOLERANCE:
            raise LogocapError(f"exported {what} disagrees with torch on {name} (relative difference "
                               f"{rel:.2e} > {TOLERANCE:g}); the exporter mistranslated it")
        worst = max(worst, rel)
    return worst


@torch.no_grad()
def export_model(model: nn.Module, out, meta, input_size: int | None = None,
                 normalization: dict | None = None, test_cfg: dict | None = None,
                 exporter: str = "auto", opset: int = OPSET, source: str | None = None) -> dict:
    """Export ``model`` (any registered family) to ``out`` (``*.onnx``) and, for LOGO-CAP, the
    KAM graph next to it (:func:`kam_path_for`). The model itself is not modified (a float32
    copy in eval mode is exported).

    Returns a report: ``files``, ``exporter`` (per graph), ``opset``, ``max_rel_diff`` (the
    post-export check), ``seconds``.
    """
    onnx_mod = require("onnx")  # noqa: F841  (fails early, naming the extra)
    require("onnxruntime")
    if exporter not in EXPORTERS:
        raise LogocapError(f"exporter must be one of {', '.join(EXPORTERS)}, got {exporter!r}")
    if int(opset) < 17:
        raise LogocapError(f"opset must be >= 17, got {opset}")
    out = Path(out)
    if out.suffix != ".onnx":
        raise LogocapError(f"the output file must end with .onnx, got {out}")
    if out.is_dir():
        raise LogocapError(f"{out} is a folder, not a file")
    t0 = time.perf_counter()
    family = family_of(model)
    net = copy.deepcopy(model).float().eval()
    k = int(getattr(net, "num_keypoints"))
    torch.manual_seed(0)
    shape = TRACE_SHAPE
    check_shape = CHECK_SHAPE
    if family == "topdown":  # person crops of the model's own aspect (3:4)
        h, w = getattr(net, "input_hw", (256, 192))
        shape, check_shape = (2, 3, h, w), (3, 3, h, w)
    sample = torch.randn(*shape)
    raw = net(sample)
    keys = [name for name, v in raw.items() if torch.is_tensor(v)]  # None outputs are left out
    export_id = uuid.uuid4().hex
    info = {
        "format": FORMAT, "graph": "network", "export_id": export_id,
        "family": family, "model_name": getattr(net, "model_name", type(net).__name__),
        "model_kwargs": _jsonable(getattr(net, "model_kwargs", {})), "num_keypoints": k,
        "meta": meta.to_dict(), "input_size": input_size, "normalization": normalization,
        "test": _jsonable(test_cfg or {}), "input": "image", "outputs": keys,
        "stride": int(getattr(net, "stride", 4)), "opset": int(opset), "source": source,
    }
    from . import __version__
    info["version"] = __version__
    if family == "topdown":
        info["input_hw"] = list(getattr(net, "input_hw", (256, 192)))
    report = {"files": [], "exporter": {}, "opset": int(opset), "max_rel_diff": {}}
    kam_file = kam_path_for(out) if family == "logocap" else None
    info["kam_file"] = kam_file.name if kam_file else None
    if kam_file:
        info["embed_dim"] = int(net.embed_dim)
    if family == "topdown":  # person crops always have the model's own size: batch only
        dims = {0: ("batch", 1)}
    else:
        dims = {0: ("batch", 1), 2: ("height", 32), 3: ("width", 32)}
    pending = []
    with tempfile.TemporaryDirectory(prefix="logocap-export-") as tmp:
        x = torch.randn(*check_shape)
        ref = net(x)
        data, used, diff = _export_graph(
            _Outputs(net, keys).eval(), sample, "image", keys, dims, exporter, opset, Path(tmp), info,
            lambda d: _check(d, {"image": x}, [ref[k_] for k_ in keys], keys, "network"))
        report["exporter"]["network"], report["max_rel_diff"]["network"] = used, diff
        if kam_file:
            d = net.embed_dim
            kam_sample = torch.randn(KAM_TRACE_N, k * d, 11, 11)  # the default 11x11 local mesh
            y = torch.randn(KAM_CHECK_N, k * d, 7, 7)
            ky = net.kam(y)
            kinfo = {**info, "graph": "kam", "input": "local_kems", "outputs": ["kams"],
                     "network_file": out.name}
            kdata, kused, kdiff = _export_graph(
                _Kam(net).eval(), kam_sample, "local_kems", ["kams"],
                {0: ("candidates", 1), 2: ("mesh", 1), 3: ("mesh", 1)}, exporter, opset, Path(tmp),
                kinfo, lambda d: _check(d, {"local_kems": y}, [ky], ["kams"], "KAM graph"))
            report["exporter"]["kam"], report["max_rel_diff"]["kam"] = kused, kdiff
            pending.append((kam_file, kdata))
        pending.append((out, data))
    for path, blob in pending:  # the KAM graph first: the network file is the entry point
        try:
            atomic_write_bytes(path, blob)
        except OSError as e:
            raise LogocapError(f"cannot write {path}: {e.strerror or e}") from None
        report["files"].append(str(path))
    report["seconds"] = time.perf_counter() - t0
    return report


def export_checkpoint(weights, out=None, model_name: str | None = None, exporter: str = "auto",
                      opset: int = OPSET, meta=None) -> dict:
    """A checkpoint (logocap format, or a plain state_dict with ``model_name``) -> ONNX file(s).

    ``out`` defaults to the checkpoint path with the suffix ``.onnx``. See :func:`export_model`.
    """
    require("onnx")
    require("onnxruntime")
    from .engine.checkpoint import build_model_from_checkpoint, load_checkpoint
    from .predict import default_input_size

    ckpt = load_checkpoint(weights)
    model, kp_meta, info = build_model_from_checkpoint(ckpt, model_name, "cpu", meta=meta)
    test_cfg = dict(((info.get("config") or {}).get("test") or {}))
    size = info.get("input_size") or default_input_size(info["model_name"])
    out = default_onnx_path(weights) if out is None else out
    return export_model(model, out, kp_meta, int(size), info.get("normalization"), test_cfg,
                        exporter, opset, source=Path(weights).name)


def _jsonable(obj):
    """Tuples -> lists, numbers / strings / None kept; json round-trips it."""
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
