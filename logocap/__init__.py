"""logocap: bottom-up multi-person human pose estimation (LOGO-CAP, center-offset, DEKR family, SAR)."""
__version__ = "0.1.0"

from .meta import COCO, CROWDPOSE, KeypointMeta, get_meta  # noqa: E402,F401
from .structures import Poses  # noqa: E402,F401
