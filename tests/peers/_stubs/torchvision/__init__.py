"""Test-only stand-in for torchvision: just the names zennit and TorchRay import at import time."""

from . import models  # noqa: F401

__version__ = "0.0.0+jaxvx.stub"
