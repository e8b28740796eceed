"""Method families as units: one module per family, each registering its models and one
:class:`~logocap.families.base.MethodFamily` record (targets, criterion, decoder, test settings).

    from logocap.families import family_of
    fam = family_of("dekr_hrnet_w32")          # or family_of(model)
    fam.decode(net, images, meta, fam.test_settings(cfg))

Adding a method: its network, targets, loss and decoder in the layered folders (``models/``,
``losses/``, ``codecs/``) and one module here; the family modules are found by name below, so
nothing shared is edited.
"""
from __future__ import annotations

import importlib
import pkgutil

from .base import (MethodFamily, family_of, get_family, list_families, register_family,
                   unwrap_model)

__all__ = ["MethodFamily", "family_of", "get_family", "list_families", "register_family",
           "unwrap_model"]

# every module of this package but base registers one family (sorted: a fixed order)
for _m in sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name != "base"):
    importlib.import_module(f"{__name__}.{_m}")
