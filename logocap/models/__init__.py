"""Networks: HRNet backbone, center-offset baseline, LOGO-CAP, DEKR, top-down SAR; built by name via the registry."""
from .center_offset import CenterOffsetModel
from .dekr import DekrModel
from .hrnet import HRNet
from .logocap import LogoCapModel
from .registry import create_model, list_models, register_model
from .sar import SarTopDownModel  # registers the top-down SAR models

__all__ = ["create_model", "list_models", "register_model", "HRNet", "CenterOffsetModel",
           "LogoCapModel", "DekrModel", "SarTopDownModel"]
