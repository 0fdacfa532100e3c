"""Where jaxvx's oneDNN library is expected (imported as ``_platform`` by the tests that need it)."""

import platform
import sys

import jax
import pytest


def require_onednn():
    """Skips off the CPU backend or off Linux x86-64 (jaxvx builds the library there only); where it is built, a
    library that did not load is a failure, not a skip."""
    from jaxvx.models import _onednn

    if jax.default_backend() != "cpu":
        pytest.skip("oneDNN convolutions are for the CPU backend")
    if not (sys.platform.startswith("linux") and platform.machine() == "x86_64"):
        pytest.skip("jaxvx builds its oneDNN library on Linux x86-64 only")
    assert _onednn.available(), _onednn.load_error()
