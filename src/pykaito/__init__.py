"""pykaito: self-host open language models with one Workspace resource."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pykaito")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
