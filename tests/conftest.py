"""Fixtures shared by the whole test suite."""

import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
VIDEOS = REPO / "tests" / "data" / "videos"


@pytest.fixture(scope="session")
def shared_videos() -> pathlib.Path:
    """The real clips of ``tests/data/videos`` (in the repository; its README.md lists them with their provenance).

    ``JAXVX_SHARED_VIDEOS`` points it at another folder laid out the same way. A missing folder fails the tests that
    need it rather than skipping them: decoding real codecs is a check we always want.
    """
    root = pathlib.Path(os.environ.get("JAXVX_SHARED_VIDEOS", VIDEOS))
    if not root.is_dir():
        pytest.fail(f"real test clips not found at {root}: JAXVX_SHARED_VIDEOS must name a folder of clips")
    return root
