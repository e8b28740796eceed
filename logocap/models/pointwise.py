"""Conv + ReLU and conv + residual add + ReLU as single oneDNN calls, for inference copies.

After BatchNorm folding (``fuse.fuse_conv_bn``) the HRNet blocks and the heads are chains of
conv -> ReLU and conv -> (+ residual) -> ReLU. In eager PyTorch each ReLU and each residual add
is one more pass over the activations; on the W32 network in bfloat16 they took 137 of 477 ms
of an op profile (flip batch 2 x 3 x 512 x 512, one core). oneDNN applies them to the
convolution's output while it is still in registers ("post-ops"), through the operators that
``torch.compile`` uses on CPU (``torch.ops.mkldnn._convolution_pointwise``), callable eagerly
without compiling anything.

``fuse_pointwise(net)`` rewires, in place, the ``forward`` of
- ``BasicBlock`` / ``Bottleneck`` whose BNs were folded: conv + ReLU for the inner convs, the
  last conv + residual add + ReLU;
- ``nn.Sequential`` children ``Conv2d -> Identity (folded BN) -> ReLU`` or ``Conv2d -> ReLU``:
  the conv does the ReLU and the ReLU child becomes ``Identity``.
Module names and parameters stay as they were. Layers whose ``forward`` is already patched (the
fp32 output layers of bf16 inference, ``precision.keep_fp32``) are left alone.

The fused operator is not autocast-aware, so the calls pass autocast's dtype themselves (the
weights are stored in it already under bf16 inference, ``precision.precast_convs``).

Values: conv + ReLU is exact (a ReLU of the same numbers). With the add, float32 gives the same
bits as the separate ops (the conv's float32 result plus the residual, rounded once either
way) where the plain conv runs the same oneDNN kernel, as on the development machine (where
PyTorch's plain path picks its own GEMM for a conv, the summation order may differ by float
rounding); in bfloat16 the fused add rounds once instead of twice (the conv output and the sum), so
bf16 results move by up to one bfloat16 rounding. A call that cannot take the fused operator
(no oneDNN, not a CPU tensor, autograd needs a gradient, bfloat16 on a CPU without oneDNN's
bfloat16 kernels) runs the plain ops instead.
"""
from __future__ import annotations

import functools
import types

import torch
from torch import nn

from .blocks import BasicBlock, Bottleneck

__all__ = ["pointwise_available", "fuse_pointwise"]


def pointwise_available() -> bool:
    """True where the fused oneDNN conv operators exist (CPU builds with oneDNN)."""
    ops = getattr(torch.ops, "mkldnn", None)
    return bool(torch.backends.mkldnn.is_available() and ops is not None
                and hasattr(ops, "_convolution_pointwise"))


def _dtype(conv: nn.Conv2d) -> torch.dtype:
    """The dtype the conv computes in: autocast's where it is on (as for ``F.conv2d``), else the
    weights'."""
    return torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else conv.weight.dtype


@functools.lru_cache(maxsize=None)
def _bf16_supported() -> bool:
    """oneDNN's bfloat16 kernels need AVX512-BW/VL/DQ (or AVX-NE-CONVERT); without them PyTorch's
    own conv falls back to its slow path, and so do these calls. A property of the CPU: asked
    once, not at every conv call."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(check is not None and check())


def _usable(conv: nn.Conv2d, x: torch.Tensor) -> bool:
    if x.device.type != "cpu" or (torch.is_grad_enabled() and x.requires_grad) or x.dim() != 4:
        return False
    dt = _dtype(conv)
    return dt == torch.float32 or (dt == torch.bfloat16 and _bf16_supported())


def _args(conv: nn.Conv2d, *tensors: torch.Tensor):
    """The operator's tensors in the dtype the conv computes in (``_dtype``), then padding,
    stride, dilation, groups."""
    dt = _dtype(conv)
    w = conv.weight.to(dt)  # no copy where the weights are stored so (precision.precast_convs)
    b = None if conv.bias is None else conv.bias.to(dt)
    return (*(t.to(dt) for t in tensors), w, b, list(conv.padding), list(conv.stride),
            list(conv.dilation), conv.groups)


def conv_relu(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """relu(conv(x)) in one call (the plain ops where the fused one does not apply)."""
    if not _usable(conv, x):
        return torch.relu(conv(x))
    return torch.ops.mkldnn._convolution_pointwise(*_args(conv, x), "relu", [], None)


def conv_add_relu(conv: nn.Conv2d, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """relu(conv(x) + other) in one call (the plain ops where the fused one does not apply)."""
    if not _usable(conv, x) or other.shape[1] != conv.out_channels:
        return torch.relu(conv(x) + other)
    return torch.ops.mkldnn._convolution_pointwise.binary(*_args(conv, x, other), "add", None,
                                                          "relu", [], None)


def _fusable(conv) -> bool:
    return (type(conv) is nn.Conv2d and conv.padding_mode == "zeros"
            and not isinstance(conv.padding, str) and "forward" not in vars(conv))


def _folded(*mods) -> bool:
    return all(isinstance(m, nn.Identity) for m in mods)


def _basic_forward(self, x):
    residual = x if self.downsample is None else self.downsample(x)
    return conv_add_relu(self.conv2, conv_relu(self.conv1, x), residual)


def _bottleneck_forward(self, x):
    residual = x if self.downsample is None else self.downsample(x)
    out = conv_relu(self.conv2, conv_relu(self.conv1, x))
    return conv_add_relu(self.conv3, out, residual)


def _conv_relu_forward(self, x):
    return conv_relu(self, x)


def fuse_pointwise(net: nn.Module) -> nn.Module:
    """Rewire ``net`` (an eval-mode, BN-folded inference copy) in place to run conv + ReLU and
    conv + add + ReLU as single oneDNN calls (module doc). Returns ``net``; ``net.fused_pointwise``
    = number of rewired blocks and convs (0 where the operators are missing)."""
    count = 0
    if not pointwise_available():
        net.fused_pointwise = 0
        return net
    for mod in list(net.modules()):
        if "forward" in vars(mod):
            continue
        if type(mod) is BasicBlock and _folded(mod.bn1, mod.bn2) \
                and _fusable(mod.conv1) and _fusable(mod.conv2):
            mod.forward = types.MethodType(_basic_forward, mod)
            count += 1
        elif type(mod) is Bottleneck and _folded(mod.bn1, mod.bn2, mod.bn3) \
                and all(_fusable(c) for c in (mod.conv1, mod.conv2, mod.conv3)):
            mod.forward = types.MethodType(_bottleneck_forward, mod)
            count += 1
        elif type(mod) is nn.Sequential:
            kids = list(mod)
            for i, conv in enumerate(kids):
                if not _fusable(conv):
                    continue
                j = i + 1
                while j < len(kids) and type(kids[j]) is nn.Identity:
                    j += 1
                if j < len(kids) and type(kids[j]) is nn.ReLU:
                    conv.forward = types.MethodType(_conv_relu_forward, conv)
                    mod[j] = nn.Identity()
                    count += 1
    net.fused_pointwise = count
    return net
