"""Equivalence tests against PyTorch peers (torch, zennit, captum, torchray), on identical weights.

Every test here is marked ``peers``. The peers are installed by ``scripts/install_peers.sh`` (CI runs it). When
torch itself is missing the tests fail with a message saying how to install it, rather than skip silently: set
``JAXVX_SKIP_PEERS=1`` to deselect them on purpose.
"""

import importlib.util
import os
import pathlib
import sys

import pytest

_STUBS = pathlib.Path(__file__).parent / "_stubs"
if importlib.util.find_spec("torchvision") is None:
    sys.path.insert(0, str(_STUBS))


def pytest_collection_modifyitems(config, items):
    here = pathlib.Path(__file__).parent
    skip = os.environ.get("JAXVX_SKIP_PEERS") == "1"
    for item in items:
        if here in pathlib.Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.peers)
            if skip:
                item.add_marker(pytest.mark.skip(reason="JAXVX_SKIP_PEERS=1 was set"))


@pytest.fixture(scope="session")
def torch():
    if importlib.util.find_spec("torch") is None:
        pytest.fail("torch is not installed: run `bash scripts/install_peers.sh` (or set JAXVX_SKIP_PEERS=1)")
    import torch as _torch

    _torch.manual_seed(0)
    _torch.set_num_threads(2)
    return _torch
