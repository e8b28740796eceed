"""Conv + BatchNorm folding for inference: ``fuse_conv_bn(model)``.

In eval mode a BatchNorm is a per-channel affine map, so a BN that reads the output of a conv
and nothing else can be folded into that conv (w' = w * g, b' = (b - mean) * g + beta with
g = gamma / sqrt(var + eps)); the BN becomes ``nn.Identity``. The folded network computes the
same function up to float rounding (one multiply-add less per BN).

Only *exact* pairs are folded, found two ways:

- on the network's ``forward``: one run on a small dummy input with hooks on every ``nn.Conv2d``
  and ``nn.BatchNorm2d`` (exact types: LOGO-CAP's Attentive Norm subclasses BatchNorm2d but its
  gates read the BN input, so it is never folded), and the autograd graph of that run: a pair is
  folded when the BN's input is the conv's output and that output feeds nothing else (one edge
  into the conv's node in the whole graph), both modules running once. So a conv whose output
  also feeds a residual, an in-place op or a second branch stays as it is.
- for modules that ``forward`` does not reach (LOGO-CAP's CMP, called through ``model.kam``):
  a ``Conv2d`` directly followed by a ``BatchNorm2d`` inside an ``nn.Sequential`` (a Sequential
  feeds each child's output to the next child only).

A model whose forward cannot run on the dummy input keeps only the Sequential pairs.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["conv_bn_pairs", "fold_conv_bn", "fuse_conv_bn", "output_convs"]


def _dummy_input(model: nn.Module, channels: int | None, size: int) -> torch.Tensor:
    """A seeded [1, C, size, size] input in the weights' dtype and device (global RNG untouched)."""
    p = next(model.parameters(), None)
    if channels is None:
        first = next((m for m in model.modules() if type(m) is nn.Conv2d), None)
        channels = first.in_channels if first is not None else 3
    gen = torch.Generator().manual_seed(0)
    return torch.randn(1, channels, size, size, generator=gen).to(
        dtype=p.dtype if p is not None else torch.float32,
        device=p.device if p is not None else "cpu").requires_grad_(True)


def _trace(model: nn.Module, fn, x: torch.Tensor):
    """Run ``fn(x)`` with grad and hooks on every exact Conv2d / BatchNorm2d of ``model``.

    Returns (outputs {key: tensor}, conv output grad_fns {name: [...]}, BN input grad_fns
    {name: [...]}, in-degree of every autograd node, names of the modules that ran), or None
    when ``fn`` fails on the dummy input.
    """
    convs = {m: n for n, m in model.named_modules() if type(m) is nn.Conv2d}
    bns = {m: n for n, m in model.named_modules() if type(m) is nn.BatchNorm2d}
    conv_out: dict[str, list] = {}  # name -> grad_fn of each call's output
    bn_in: dict[str, list] = {}
    ran: set[str] = set()

    def conv_hook(mod, inputs, out):
        conv_out.setdefault(convs[mod], []).append(out.grad_fn)
        ran.add(convs[mod])

    def bn_hook(mod, inputs, out):
        bn_in.setdefault(bns[mod], []).append(inputs[0].grad_fn)
        ran.add(bns[mod])

    handles = [m.register_forward_hook(conv_hook) for m in convs]
    handles += [m.register_forward_hook(bn_hook) for m in bns]
    try:
        with torch.enable_grad():
            out = fn(x)
    except Exception:  # a network that needs another input
        return None
    finally:
        for h in handles:
            h.remove()
    if isinstance(out, dict):
        outs = dict(out)
    elif isinstance(out, (list, tuple)):
        outs = dict(enumerate(out))
    else:
        outs = {0: out}
    outs = {k: v for k, v in outs.items() if torch.is_tensor(v) and v.grad_fn is not None}
    # in-degree of every autograd node: how many consumers read its output
    indeg: dict = {}
    seen, stack = set(), [v.grad_fn for v in outs.values()]
    for v in outs.values():
        indeg[v.grad_fn] = indeg.get(v.grad_fn, 0) + 1  # the model's output itself is a use
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        for nxt, _ in node.next_functions:
            if nxt is not None:
                indeg[nxt] = indeg.get(nxt, 0) + 1
                stack.append(nxt)
    return outs, conv_out, bn_in, indeg, ran


def _graph_pairs(model: nn.Module, input_size: int = 64) -> tuple[list[tuple[str, str]], set[str]]:
    """(pairs proven on the forward's autograd graph, names of the modules that ran)."""
    traced = _trace(model, model, _dummy_input(model, None, input_size))
    if traced is None:  # Sequential pairs only
        return [], set()
    _, conv_out, bn_in, indeg, ran = traced
    pairs = []
    owner = {fns[0]: name for name, fns in conv_out.items() if len(fns) == 1}
    for bn_name, fns in bn_in.items():
        if len(fns) != 1 or fns[0] is None:
            continue
        conv_name = owner.get(fns[0])
        if conv_name is not None and indeg.get(fns[0], 0) == 1:
            pairs.append((conv_name, bn_name))
    return pairs, ran


def output_convs(model: nn.Module, outputs=("heatmaps", "offsets"), input_size: int = 64,
                 kam: bool = True) -> list[str]:
    """Names of the Conv2d layers that produce the given outputs of ``forward`` (and, with
    ``kam``, of ``model.kam`` where the model has one): walking back from each output through
    the autograd graph, the first convolution met on every path (e.g. the heads' final 1x1
    convs; DEKR's 17 per-joint offset convs). Under bf16 these stay in fp32 (the Predictor),
    because rounding an offset of 16-32 output px to bfloat16 moves it by up to 0.5 input px."""
    was_training = model.training
    model.eval()
    found: list[str] = []
    try:
        calls = [(model, _dummy_input(model, None, input_size), outputs)]
        if kam and hasattr(model, "kam") and hasattr(model, "embed_dim"):
            k = int(model.num_keypoints) * int(model.embed_dim)
            calls.append((model.kam, _dummy_input(model, k, 11), None))
        for fn, x, keys in calls:
            traced = _trace(model, fn, x)
            if traced is None:
                continue
            outs, conv_out, _, _, _ = traced
            owner = {f: name for name, fns in conv_out.items() for f in fns}
            stack = [v.grad_fn for k, v in outs.items() if keys is None or k in keys]
            seen = set()
            while stack:
                node = stack.pop()
                if node is None or node in seen:
                    continue
                seen.add(node)
                if node in owner:
                    if owner[node] not in found:
                        found.append(owner[node])
                    continue
                stack.extend(n for n, _ in node.next_functions)
    finally:
        model.train(was_training)
    return found


def conv_bn_pairs(model: nn.Module, input_size: int = 64, ran: set | None = None
                  ) -> list[tuple[str, str]]:
    """Names ``(conv, bn)`` of the exact Conv2d -> BatchNorm2d pairs of ``model`` (see the module
    doc). Runs ``model`` once on a [1, C, input_size, input_size] dummy input (eval mode);
    ``ran`` (a set) receives the names of the modules that forward ran."""
    was_training = model.training
    model.eval()
    try:
        pairs, ran_ = _graph_pairs(model, input_size)
    finally:
        model.train(was_training)
    ran = ran if ran is not None else set()
    ran.update(ran_)
    used = {n for pair in pairs for n in pair}
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.Sequential):
            continue
        kids = list(mod.named_children())
        for (a, ma), (b, mb) in zip(kids, kids[1:]):
            ca, cb = f"{name}.{a}" if name else a, f"{name}.{b}" if name else b
            if (type(ma) is nn.Conv2d and type(mb) is nn.BatchNorm2d and ca not in ran
                    and cb not in ran and ca not in used and cb not in used):
                pairs.append((ca, cb))
                used.update((ca, cb))
    return pairs


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold ``bn`` (its running statistics, eval mode) into ``conv``'s weight and bias, in place;
    computed in float64, stored in the conv's dtype."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm without running statistics")
    w = conv.weight.double()
    mean, var = bn.running_mean.double(), bn.running_var.double()
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(mean)
    g = gamma / torch.sqrt(var + bn.eps)
    b = conv.bias.double() if conv.bias is not None else torch.zeros_like(mean)
    conv.weight.copy_((w * g.view(-1, 1, 1, 1)).to(conv.weight.dtype))
    new_bias = ((b - mean) * g + beta).to(conv.weight.dtype)
    if conv.bias is None:
        conv.bias = nn.Parameter(new_bias, requires_grad=False)
    else:
        conv.bias.copy_(new_bias)


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, last = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, last, new)


def fuse_conv_bn(model: nn.Module, inplace: bool = False, input_size: int = 64,
                 channels_last: bool = False) -> nn.Module:
    """An eval-mode network with every exact Conv2d -> BatchNorm2d pair folded (module doc).

    ``inplace=False`` (default) folds a deep copy and leaves ``model`` untouched (a training model
    handed to the evaluator keeps its BNs). The result is for inference only: its parameters do
    not require grad and it stays in eval mode. ``result.fused_conv_bn`` = number of folded pairs.
    ``channels_last``: the Conv2d layers that ``forward`` runs get channels_last weights; the
    others stay NCHW (LOGO-CAP's CMP on [N, K*d, 11, 11] KEMs: 350 ms NCHW vs 442 ms channels_last
    for 30 W32 candidates on one core).
    """
    net = model if inplace else copy.deepcopy(model)
    net.eval()
    ran: set[str] = set()
    pairs = conv_bn_pairs(net, input_size, ran)
    for conv_name, bn_name in pairs:
        fold_conv_bn(net.get_submodule(conv_name), net.get_submodule(bn_name))
        _set_module(net, bn_name, nn.Identity())
    if channels_last:
        for name, mod in net.named_modules():
            if type(mod) is nn.Conv2d and name in ran:
                mod.to(memory_format=torch.channels_last)
    net.requires_grad_(False)
    net.fused_conv_bn = len(pairs)
    return net
