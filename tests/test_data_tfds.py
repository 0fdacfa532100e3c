"""The synthetic benchmark as a TFDS dataset (array_record, read without TensorFlow) and the tfds source."""

import sys

import numpy as np
import pytest

from jaxvx.data import SyntheticBuilder, SyntheticBuilderConfig, SyntheticConfig, render_clip, tfds

TINY = SyntheticConfig(num_frames=6, height=24, width=24, title_frames=1, action_frames=3)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    config = SyntheticBuilderConfig(name="tiny", synthetic=TINY, split_sizes={"train": 5, "test": 3})
    builder = SyntheticBuilder(config=config, data_dir=str(data_dir))
    builder.download_and_prepare()
    return builder


def test_records_equal_the_in_memory_benchmark(built):
    source = built.as_data_source(split="train")
    assert len(source) == 5
    for i in range(5):
        record = source[i]
        expected = render_clip(TINY, "train", i)
        assert set(record) == set(expected)
        for key, value in expected.items():
            np.testing.assert_array_equal(np.asarray(record[key]), np.asarray(value), err_msg=key)


def test_built_files_are_array_record_and_need_no_tensorflow(built):
    files = sorted(p.name for p in built.data_path.iterdir())
    assert any(".array_record-" in name for name in files), files
    assert "tensorflow" not in sys.modules  # nothing imported TensorFlow to build or read


def test_tfds_source_reads_a_prepared_folder(built):
    source = tfds(built.data_dir, "test")
    assert len(source) == 3
    record = source[1]
    assert isinstance(record["label"], int)
    assert record["video"].dtype == np.uint8 and record["video"].shape == (6, 24, 24, 3)
    np.testing.assert_array_equal(record["video"], render_clip(TINY, "test", 1)["video"])
    assert source.class_names[record["label"]] == TINY.class_names[record["label"]]
    assert source[-1]["index"] == 2
    with pytest.raises(IndexError, match="out of range"):
        source[3]


@pytest.mark.slow
def test_tfds_source_builds_a_named_config(tmp_path):
    source = tfds("jaxvx_synthetic/motion_8x32", "validation[:4]", data_dir=str(tmp_path))
    assert len(source) == 4
    cfg = SyntheticConfig(num_frames=8, height=32, width=32)
    np.testing.assert_array_equal(source[3]["video"], render_clip(cfg, "validation", 3)["video"])


def test_unknown_datasets_are_named(tmp_path):
    with pytest.raises(ValueError, match="unknown jaxvx_synthetic config 'nope'"):
        tfds("jaxvx_synthetic/nope", "train", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="cannot open TFDS dataset 'no_such_dataset_xyz'"):
        tfds("no_such_dataset_xyz", "train", data_dir=str(tmp_path), download=False)
