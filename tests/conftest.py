"""Fixtures shared by the whole test suite."""

import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_videos() -> pathlib.Path:
    """The real clips of ``../shared/videos`` (beside the checkout; CI clones with shared/ beside it).

    ``JAXVX_SHARED_VIDEOS`` overrides the location. A missing folder fails the tests that need it rather than
    skipping them: decoding real codecs is a check we always want.
    """
    root = pathlib.Path(os.environ.get("JAXVX_SHARED_VIDEOS", REPO.parent / "shared" / "videos"))
    if not root.is_dir():
        pytest.fail(f"real test clips not found at {root}: set JAXVX_SHARED_VIDEOS to the shared/videos folder")
    return root
