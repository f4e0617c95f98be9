"""The local model store: pull GGUFs from the Hugging Face hub (resumable, checked), list, remove."""

from pykaito.models.pull import pull
from pykaito.models.refs import ModelRef, parse_ref
from pykaito.models.store import ModelStore, StoredModel, default_root

__all__ = ["ModelRef", "ModelStore", "StoredModel", "default_root", "parse_ref", "pull"]
