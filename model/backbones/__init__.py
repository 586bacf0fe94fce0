"""Backbones by name: `create_backbone("efficientnet_lite0")`.

Importing the family modules registers their constructors.
"""
from model.backbones import efficientnet_lite, torchvision_models  # noqa: F401  (registration)
from model.backbones._base import Backbone
from model.backbones._registry import IMAGENET, BackboneEntry, Weights, backbone_entry, create_backbone, list_backbones, register_backbone

__all__ = [
    "IMAGENET",
    "Backbone",
    "BackboneEntry",
    "Weights",
    "backbone_entry",
    "create_backbone",
    "list_backbones",
    "register_backbone",
]
