"""What an installed jaxvx holds and needs: a pure-Python wheel with its checkpoints and license, optional pieces
(tensorflow-datasets, the oneDNN convolutions) used only when there and named when missing."""

import email
import os
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvx import models
from jaxvx.models import _onednn

REPO = Path(__file__).resolve().parents[1]


def _python(code: str, cwd=REPO) -> subprocess.CompletedProcess:
    """``code`` run by a fresh interpreter (its own ``sys.modules``), stdout and stderr captured."""
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300)


# ---------------------------------------------------------------------------------------------- optional imports
def test_importing_jaxvx_data_and_the_cli_leaves_tensorflow_datasets_unloaded():
    r = _python("import sys, jaxvx, jaxvx.data, jaxvx.cli\n"
                "assert 'tensorflow_datasets' not in sys.modules, 'tensorflow_datasets imported'\n"
                "from jaxvx.data import synthetic\n"
                "assert 'tensorflow_datasets' not in sys.modules, 'tensorflow_datasets imported by synthetic'\n"
                "from jaxvx.data import tfds, SyntheticBuilder\n"
                "assert 'tensorflow_datasets' in sys.modules and SyntheticBuilder.name == 'jaxvx_synthetic'")
    assert r.returncode == 0, r.stderr


def test_a_missing_tensorflow_datasets_names_the_extra():
    r = _python("import sys; sys.modules['tensorflow_datasets'] = None  # as if not installed\n"
                "import jaxvx.data\n"
                "jaxvx.data.synthetic('test', num_clips=1)\n"
                "jaxvx.data.tfds('jaxvx_synthetic/motion_8x32', 'test')")
    assert r.returncode == 1 and r.stderr.strip().splitlines()[-1].startswith("ImportError: jaxvx.data's TFDS"), r.stderr
    assert 'pip install "jaxvx[tfds]"' in r.stderr


def test_unknown_data_attribute_raises_attribute_error():
    import jaxvx.data

    with pytest.raises(AttributeError, match="no attribute 'tfdss'"):
        jaxvx.data.tfdss  # noqa: B018
    assert set(jaxvx.data.TFDS_NAMES) <= set(jaxvx.data.__all__) <= set(dir(jaxvx.data))


# ------------------------------------------------------------------------------------------------ the test clips
def test_the_real_clips_the_tests_decode_are_in_the_repository():
    from test_io_video import readme_table

    VIDEOS = REPO / "tests" / "data" / "videos"  # as tests/conftest.py (``import conftest`` may find tests/peers')

    r = subprocess.run(["git", "ls-files", "--", VIDEOS.relative_to(REPO).as_posix()], cwd=REPO, capture_output=True,
                       text=True)
    if r.returncode != 0:
        pytest.skip(f"not a git checkout: {r.stderr.strip()}")
    tracked = {Path(line).name for line in r.stdout.splitlines()}
    assert set(readme_table(VIDEOS)) | {"README.md"} == tracked


# -------------------------------------------------------------------------------------- the optional oneDNN library
@pytest.fixture
def reload_onednn(monkeypatch):
    """Clears :func:`_onednn._load`'s cache before and after the test, so that what the test fakes is loaded anew."""
    monkeypatch.delenv(models._layers.CONV_ENV, raising=False)
    _onednn._load.cache_clear()
    yield
    monkeypatch.undo()
    _onednn._load.cache_clear()


def test_without_the_library_the_models_run_xla_convolutions(monkeypatch, reload_onednn):
    monkeypatch.setattr(_onednn, "_library_files", lambda: [])
    assert not _onednn.available() and _onednn.version() is None
    assert "JAXVX_BUILD_ONEDNN=1" in _onednn.load_error() and "jaxvx[onednn]" in _onednn.load_error()
    assert models.conv_form() == "rewrite"
    model = models.create("c3d", 3, width=0.0625)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 16, 16, 16, 3)), jnp.float32)
    variables = model.init(jax.random.key(0), x)
    y = model.apply(variables, x)
    monkeypatch.setenv(models._layers.CONV_ENV, "lax")
    np.testing.assert_allclose(np.asarray(y), np.asarray(model.apply(variables, x)), rtol=1e-4, atol=1e-5)
    with pytest.raises(RuntimeError, match="oneDNN convolutions are not available: jaxvx was built without its oneDNN library"):
        _onednn.conv3d(x, jnp.zeros((1, 1, 1, 3, 2)), (1, 1, 1), ((0, 0),) * 3)
    monkeypatch.setenv(models._layers.CONV_ENV, "onednn")
    with pytest.raises(RuntimeError, match="JAXVX_CONV=onednn.*JAXVX_BUILD_ONEDNN=1"):
        models.conv_form()


def test_a_library_without_onednn_runtime_names_the_extra(monkeypatch, reload_onednn):
    real = metadata.distribution

    def distribution(name):
        if name == "onednn-cpu-gomp":
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(_onednn, "_library_files", lambda: ["/nowhere/_onednn_conv.so"])
    monkeypatch.setattr(metadata, "distribution", distribution)
    assert not _onednn.available()
    assert "onednn-cpu-gomp" in _onednn.load_error() and "jaxvx[onednn]" in _onednn.load_error()


# ---------------------------------------------------------------------------------------------------- the wheel
def _wheel(out: Path, **env) -> subprocess.CompletedProcess:
    """``pip wheel`` of the checkout into ``out``, in the current environment (no isolation: nothing downloaded)."""
    return subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(out),
                           str(REPO)], capture_output=True, text=True, timeout=600, env={**os.environ, **env})


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    r = _wheel(out, JAXVX_BUILD_ONEDNN="0")
    assert r.returncode == 0, r.stdout + r.stderr
    (path,) = out.glob("*.whl")
    return path


@pytest.mark.slow
def test_the_default_wheel_is_pure_python_with_its_checkpoints_and_license(wheel):
    assert wheel.name.endswith("-py3-none-any.whl"), wheel.name
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        meta = email.message_from_bytes(z.read(f"{info}/METADATA"))
        license_text = z.read(f"{info}/licenses/LICENSE").decode()
    assert not [n for n in names if n.endswith((".so", ".pyd", ".dylib"))]
    shipped = {p.name for p in (REPO / "jaxvx" / "shipped_checkpoints").iterdir()}
    assert shipped and {f"jaxvx/shipped_checkpoints/{n}" for n in shipped} <= names
    assert {"jaxvx/models/kinetics400_labels.txt", "jaxvx/models/kinetics400_labels.md"} <= names
    assert meta["License-Expression"] == "Apache-2.0" and meta["License-File"] == "LICENSE"
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    required = [r for r in meta.get_all("Requires-Dist") if "extra ==" not in r]
    assert not [r for r in required if r.split()[0].startswith(("tensorflow", "onednn", "array", "jaxlib"))], required
    assert {"tfds", "onednn", "i3d", "test"} <= set(meta.get_all("Provides-Extra"))


@pytest.mark.slow
def test_an_installed_wheel_finds_the_shipped_checkpoints(wheel, tmp_path):
    site = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(site),
                        str(wheel)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    code = ("import jaxvx; from jaxvx import checkpoints\n"
            f"assert jaxvx.__file__.startswith({str(site)!r}), jaxvx.__file__\n"
            "model, variables, card = checkpoints.load('c3d-small')\n"
            "print(sorted(checkpoints.list()), card['name'])")
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("JAXVX_CHECKPOINT_DIR", None)
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env=env)
    assert r.returncode == 0, r.stderr
    shipped_dir = Path(__file__).resolve().parents[1] / "jaxvx" / "shipped_checkpoints"
    shipped = sorted(p.stem for p in shipped_dir.glob("*.json"))
    assert all(repr(name) in r.stdout for name in shipped), (shipped, r.stdout)
    assert r.stdout.strip().endswith("c3d-small")


@pytest.mark.slow
def test_the_onednn_build_is_opt_in_and_says_what_it_needs(tmp_path):
    r = _wheel(tmp_path, JAXVX_BUILD_ONEDNN="1")
    try:
        metadata.distribution("onednn-devel-cpu-gomp")
    except metadata.PackageNotFoundError:  # the headers are not here: the build stops and names them
        assert r.returncode != 0 and "JAXVX_BUILD_ONEDNN=1 needs" in r.stdout + r.stderr
        assert "onednn-devel-cpu-gomp" in r.stdout + r.stderr
        return
    assert r.returncode == 0, r.stdout + r.stderr
    (path,) = tmp_path.glob("*.whl")
    assert "linux_x86_64" in path.name
    with zipfile.ZipFile(path) as z:
        (so,) = [n for n in z.namelist() if n.endswith(".so")]
        assert z.getinfo(so).file_size < 1_000_000  # stripped: no debug information


def test_ci_runs_the_readmes_test_command():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert f"   {ci}\n" in readme and "JAXVX_BUILD_ONEDNN=1" in ci
