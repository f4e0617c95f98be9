"""Model presets and GPU instance types as data files, plus their loaders and model lookup."""

from pykaito.catalog.loader import Catalog, closest, load_catalog
from pykaito.catalog.types import InstanceType, ModelPreset

__all__ = ["Catalog", "InstanceType", "ModelPreset", "closest", "load_catalog"]
