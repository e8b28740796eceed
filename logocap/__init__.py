"""logocap: bottom-up multi-person human pose estimation with LOGO-CAP and the center-offset baseline
on HRNet backbones (the DEKR family and SAR are planned, not yet implemented)."""
__version__ = "0.1.0"

from .meta import COCO, CROWDPOSE, KeypointMeta, get_meta  # noqa: E402,F401
from .structures import Poses  # noqa: E402,F401


def __getattr__(name):
    # the API pulls in torch and the models: imported on first use, so `import logocap` stays fast
    if name in ("load", "PoseModel"):
        from . import api
        return getattr(api, name)
    raise AttributeError(f"module 'logocap' has no attribute '{name}'")


def __dir__():
    return sorted(list(globals()) + ["load", "PoseModel"])
