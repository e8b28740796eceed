"""Moved to :mod:`logocap.precision` (used by training and by the Predictor alike, so it sits below
both); this name stays importable for existing callers."""
from ..precision import *  # noqa: F401,F403
from ..precision import __all__  # noqa: F401
