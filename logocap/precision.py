"""Training / inference precision: which dtype the network computes in, decided once.

``precision`` (``train.precision``):
- ``fp32``: float32 everywhere.
- ``bf16``: autocast to bfloat16 for the network (convolutions, matmuls); fp32 master weights,
  fp32 optimiser state, and the losses computed in fp32 on fp32 copies of the network outputs.
  No loss scaling is needed (bfloat16 has float32's exponent range).
- ``fp16``: CUDA only, float16 autocast with a GradScaler (the classic AMP).
- ``fp64``: float64 weights and data, for checks that must not depend on rounding (the DDP
  equality test).
- ``auto``: ``bf16`` where the hardware computes bfloat16 natively (a CPU with AMX or
  AVX512-BF16, a CUDA GPU that supports it), else ``fp32``.

``channels_last`` (``train.channels_last``): NHWC memory format for the network and its input;
``auto`` = on for fp32 / bf16 / fp16 (oneDNN and cuDNN pick faster kernels), off for fp64.

At test time (``test.precision``, :data:`TEST_PRECISIONS`): ``fp32`` (default) or ``bf16``, where
the backbone, the heads and LOGO-CAP's CMP (``model.kam``) run under bfloat16 autocast and their
outputs come back as float32, so that coordinates, meshes, gathers, NMS and scores stay in fp32
(rounding a coordinate near 500 px to bfloat16 moves it by up to 2 px). The layers that produce
the heatmaps, the offsets and the KAMs (:func:`~logocap.models.fuse.output_convs`: the heads'
final 1x1 convs) run in fp32 on the bfloat16 features (:func:`keep_fp32`): rounding their
outputs to bfloat16 would move an offset of 16-32 output px by up to 0.5 input px.
:class:`InferenceModel` is what the Predictor calls.

What bf16 still changes is the network itself: its features carry bfloat16's rounding, so the
heatmaps differ from fp32 by about 1e-3 of their range (4e-3 with random W32 weights) and the
offset-decoded joints by a median 0.08 px (up to about 1 px). Decoding picks between pixels
(center NMS on the 4x upsampled map, LOGO-CAP's global top-2) whose fp32 values often differ by
far less, and those picks flip; keeping the heads' hidden layers in fp32 as well buys little
and costs about 30% of the W32 network speed (``benchmarks/bf16_agreement.py`` measures the
sources, the near-ties and the cost).
"""
from __future__ import annotations

import contextlib
import types
from dataclasses import dataclass

import torch

from .utils import LogocapError, native_bf16

__all__ = ["PRECISIONS", "TEST_PRECISIONS", "Precision", "resolve_precision", "MixedPrecisionModel",
           "InferenceModel", "keep_fp32", "precast_convs"]

PRECISIONS = ("auto", "fp32", "bf16", "fp16", "fp64")
TEST_PRECISIONS = ("fp32", "bf16")  # test.precision
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    name: str  # fp32 | bf16 | fp16 | fp64 (never "auto")
    device_type: str  # cpu | cuda
    channels_last: bool
    reason: str  # one phrase for the log: why this precision

    @property
    def param_dtype(self) -> torch.dtype:
        return torch.float64 if self.name == "fp64" else torch.float32

    @property
    def uses_scaler(self) -> bool:
        return self.name == "fp16"

    def autocast(self):
        if self.name in _AUTOCAST:
            return torch.autocast(device_type=self.device_type, dtype=_AUTOCAST[self.name])
        return contextlib.nullcontext()

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """Cast the weights (fp64 only) and set the memory format, in place."""
        model.to(dtype=self.param_dtype)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def cast_batch(self, batch: dict) -> dict:
        """fp64: floating tensors of the batch to float64 (other precisions: unchanged)."""
        if self.name != "fp64":
            return batch
        return {k: (v.double() if torch.is_tensor(v) and v.is_floating_point() else v)
                for k, v in batch.items()}

    def describe(self) -> str:
        return f"{self.name}{' + channels_last' if self.channels_last else ''} ({self.reason})"


def resolve_precision(name: str = "auto", device: torch.device | str = "cpu",
                      channels_last: bool | str = "auto") -> Precision:
    """Turn the configured names into a :class:`Precision` for ``device``; bad names are one line."""
    name = str(name).lower()
    if name not in PRECISIONS:
        raise LogocapError(f"unknown precision '{name}'; choose one of {', '.join(PRECISIONS)}")
    dev = torch.device(device).type
    if name == "auto":
        if dev == "cuda":
            ok = torch.cuda.is_bf16_supported()
            name, reason = ("bf16", "auto: the GPU supports bfloat16") if ok else \
                ("fp32", "auto: the GPU has no bfloat16")
        else:
            hw = native_bf16()
            name, reason = ("bf16", f"auto: the CPU computes bfloat16 natively ({hw})") if hw else \
                ("fp32", "auto: the CPU has no native bfloat16 (no AMX / AVX512-BF16)")
    else:
        reason = "set in the config"
        if name == "fp16" and dev != "cuda":
            raise LogocapError("precision fp16 needs a CUDA device; on CPU use bf16 or fp32")
        if name == "bf16" and dev == "cpu" and not native_bf16():
            reason += "; this CPU has no native bfloat16, so it is emulated and slow"
    if channels_last == "auto":
        cl = name != "fp64"
    elif isinstance(channels_last, bool):
        cl = channels_last
    else:
        raise LogocapError(f"channels_last must be true, false or auto, got {channels_last!r}")
    return Precision(name, dev, cl, reason)


class MixedPrecisionModel:
    """What a criterion sees instead of the network: the network's forward and ``kam`` run in
    the chosen precision, and their outputs come back as float32 (float64 in fp64), so that the
    losses, and LOGO-CAP's candidate decoding inside the training criterion, run in full
    precision. Any other attribute is the network's own. Not an ``nn.Module``: the parameter
    names (and so the checkpoints) are those of the network.
    """

    def __init__(self, model: torch.nn.Module, precision: Precision):
        self.model = model
        self.precision = precision

    def _out(self, v, key: str | None = None):
        if torch.is_tensor(v) and v.dtype in (torch.bfloat16, torch.float16):
            return v.float()
        return v

    def __call__(self, x: torch.Tensor):
        if self.precision.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with self.precision.autocast():
            out = self.model(x)
        if isinstance(out, dict):
            return {k: self._out(v, k) for k, v in out.items()}
        return self._out(out)

    def kam(self, x: torch.Tensor) -> torch.Tensor:
        with self.precision.autocast():
            return self._out(self.model.kam(x))

    def __getattr__(self, name):
        return getattr(self.model, name)


class InferenceModel(MixedPrecisionModel):
    """What the Predictor calls instead of the network: ``__call__`` and ``kam`` run in the
    chosen precision and memory format, and every output comes back as a contiguous NCHW float32
    tensor (the weights' dtype for fp64 models), ready for decoding. Outputs named in
    ``KEEP_CHANNELS_LAST`` that the network gives in channels_last stay so: LOGO-CAP's embedding
    is only read by the local-KEM gather, which needs it channels-last and would otherwise copy it
    back (the same values either way). Any other attribute (``kam`` aside: ``model_name``,
    ``num_keypoints``, ...) is the network's own."""

    KEEP_CHANNELS_LAST = ("embedding",)

    def _out(self, v, key: str | None = None):
        v = super()._out(v)
        if not torch.is_tensor(v):
            return v
        if key in self.KEEP_CHANNELS_LAST and v.dim() == 4 \
                and v.is_contiguous(memory_format=torch.channels_last):
            return v
        return v.contiguous()


def _fp32_forward(self, x):
    with torch.autocast(x.device.type, enabled=False):
        return type(self).forward(self, x.float())


def keep_fp32(model: torch.nn.Module, names) -> torch.nn.Module:
    """Run the named submodules in fp32 under autocast (their input cast to float32), in place:
    an inference copy's output layers (see the module doc). Returns ``model``."""
    for name in names:
        mod = model.get_submodule(name)
        mod.forward = types.MethodType(_fp32_forward, mod)
    return model


def precast_convs(model: torch.nn.Module, dtype: torch.dtype, keep=()) -> torch.nn.Module:
    """Store the weights and biases of the plain ``nn.Conv2d`` layers in ``dtype``, in place,
    except the named ones (``keep``: those :func:`keep_fp32` runs in float32). Autocast casts a
    convolution's weight and bias to its dtype at every call (the W32 network: about 620 casts,
    9% of its bf16 time); cast once here, the call finds them in ``dtype`` already, so the
    outputs are the same bits. For an inference copy under autocast only. Returns ``model``."""
    keep = set(keep)
    for name, mod in model.named_modules():
        if type(mod) is torch.nn.Conv2d and name not in keep:
            for p in (mod.weight, mod.bias):
                if p is not None:
                    p.data = p.data.to(dtype)
    return model
