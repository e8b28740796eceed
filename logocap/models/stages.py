"""Stage timing inside a network's forward pass, by forward hooks at the boundaries it declares.

A network that can be split into timed stages has a method ``stage_marks() -> [(module name,
"pre" | "post", stage)]``: when the named submodule ("" = the network itself) starts ("pre") or
has finished ("post"), the time since the previous mark belongs to ``stage``. DEKR, for example:
the heatmap transition starting ends "backbone", the offset transition finishing ends "heads",
the whole forward finishing ends "adaptive_convs".

:func:`network_stages` registers those hooks for the duration of a ``with`` block, only when a
timer is given: without one nothing is registered and the forward pass is untouched. The timer
is a callable ``tick(stage)`` that adds the time since its previous call to ``stage`` (the
decoders' ticker), so the network's stages and the decoder's own continue one timeline and sum
to the whole call. Hooks only read the clock: outputs are unchanged.
"""
from __future__ import annotations

import contextlib

from torch import nn

__all__ = ["find_module", "network_stages"]


def find_module(net) -> nn.Module | None:
    """The ``nn.Module`` inside inference wrappers that hold it as ``.model`` or ``.net``
    (Predictor's InferenceModel, the benchmark's timers, a decoder's channel adapter); None when
    there is none (e.g. an exported network on another runtime)."""
    seen = set()
    while not isinstance(net, nn.Module):
        if id(net) in seen:
            return None
        seen.add(id(net))
        inner = vars(net) if hasattr(net, "__dict__") else {}
        nxt = inner.get("model", inner.get("net"))
        if nxt is None:
            return None
        net = nxt
    return net


@contextlib.contextmanager
def network_stages(net, tick=None):
    """Within the block, ``tick(stage)`` is called at the stage boundaries that the network
    inside ``net`` declares (module doc). No-op when ``tick`` is None or the network declares
    none (its forward time then stays in whatever stage the caller ticks next)."""
    module = find_module(net) if tick is not None else None
    marks = getattr(module, "stage_marks", None)
    if marks is None:
        yield
        return
    handles = []
    try:
        for name, when, stage in marks():
            sub = module.get_submodule(name)
            if when == "pre":
                handles.append(sub.register_forward_pre_hook(
                    lambda _m, _inp, s=stage: tick(s)))
            elif when == "post":
                handles.append(sub.register_forward_hook(
                    lambda _m, _inp, _out, s=stage: tick(s)))
            else:
                raise ValueError(f"stage mark '{when}' of {name!r}: expected 'pre' or 'post'")
        yield
    finally:
        for h in handles:
            h.remove()
