"""Where jaxvx's oneDNN library is expected (imported as ``_platform`` by the tests that need it)."""

import os
import platform
import sys

import jax
import pytest


def require_onednn():
    """Skips off the CPU backend, off Linux x86-64 (jaxvx builds the library there only) and where jaxvx was built
    without it, unless ``JAXVX_BUILD_ONEDNN=1`` says it should be there (as CI does); a library that is there but did
    not load is a failure, not a skip."""
    from jaxvx.models import _onednn

    if jax.default_backend() != "cpu":
        pytest.skip("oneDNN convolutions are for the CPU backend")
    if not (sys.platform.startswith("linux") and platform.machine() == "x86_64"):
        pytest.skip("jaxvx builds its oneDNN library on Linux x86-64 only")
    if not _onednn._library_files() and os.environ.get("JAXVX_BUILD_ONEDNN", "0") != "1":
        pytest.skip(f"jaxvx was built without its oneDNN library ({_onednn._INSTALL})")
    assert _onednn.available(), _onednn.load_error()
