"""What an installed jaxvx holds and needs: optional dependencies imported only when used, named when missing."""

import subprocess
import sys
from pathlib import Path

import pytest

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
    from conftest import VIDEOS
    from test_io_video import readme_table

    r = subprocess.run(["git", "ls-files", "--", VIDEOS.relative_to(REPO).as_posix()], cwd=REPO, capture_output=True,
                       text=True)
    if r.returncode != 0:
        pytest.skip(f"not a git checkout: {r.stderr.strip()}")
    tracked = {Path(line).name for line in r.stdout.splitlines()}
    assert set(readme_table(VIDEOS)) | {"README.md"} == tracked
