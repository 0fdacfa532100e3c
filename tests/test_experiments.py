"""scripts/experiments: every config names known settings, shipped checkpoints and methods that fit their models,
and run.sh runs every config."""

import pathlib
import re
import tomllib

import pytest

from jaxvx import checkpoints
from jaxvx.cli import _RUN_KEYS
from jaxvx.explain import METHODS, build_method

HERE = pathlib.Path(__file__).resolve().parent.parent / "scripts" / "experiments"
CONFIGS = sorted(HERE.glob("*.toml"))


def test_run_sh_runs_every_config():
    script = (HERE / "run.sh").read_text()
    listed = re.search(r"\n  names=\(([^)]*)\)", script).group(1).split()
    assert sorted(listed) == sorted(p.stem for p in CONFIGS) and len(CONFIGS) >= 7


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_names_known_settings_and_fitting_methods(path):
    config = tomllib.loads(path.read_text())
    assert set(config) <= set(_RUN_KEYS), sorted(set(config) - set(_RUN_KEYS))
    assert path.read_text().startswith("# "), "each config says what it reproduces"
    model, variables, card = checkpoints.load(config["checkpoint"])
    for name in config["method"].split(","):
        assert name in METHODS
        build_method(name, model, variables, card)  # raises when the method does not fit the model
