"""TFDS: the synthetic benchmark as a dataset builder, and a source over any TFDS data source.

The builder stores every clip as plain tensors (zlib-encoded ``tfds.features.Tensor``) in array_record files, so that
``tfds`` builds it and ``tfds.data_source`` reads it with random access and without TensorFlow.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxvx.data._synthetic import SyntheticConfig, render_clip

try:
    import tensorflow_datasets as tfds_lib
except ImportError as error:  # the optional extra: name it
    raise ImportError(
        f"jaxvx.data's TFDS sources (tfds, TFDSVideos, SyntheticBuilder, build_synthetic_tfds, jaxvx data build) "
        f'need tensorflow-datasets, which cannot be imported ({error}): pip install "jaxvx[tfds]"'
    ) from error

__all__ = ["SyntheticBuilder", "SyntheticBuilderConfig", "TFDSVideos", "build_synthetic_tfds", "tfds"]

_SPLIT_SIZES = {"train": 4000, "test": 1000, "validation": 1000}


@dataclasses.dataclass(eq=False)
class SyntheticBuilderConfig(tfds_lib.core.BuilderConfig):
    """A TFDS config of the synthetic benchmark: its :class:`SyntheticConfig` and the clips per split."""

    synthetic: SyntheticConfig = dataclasses.field(default_factory=SyntheticConfig)
    split_sizes: dict[str, int] = dataclasses.field(default_factory=lambda: dict(_SPLIT_SIZES))


def _named(variant: str, frames: int, size: int, sizes=None) -> SyntheticBuilderConfig:
    sizes = dict(_SPLIT_SIZES) if sizes is None else sizes
    return SyntheticBuilderConfig(
        name=f"{variant}_{frames}x{size}",
        description=f"{variant!r} variant, {frames} frames of {size}x{size} pixels, 2 distractors, "
        + ", ".join(f"{n} {split}" for split, n in sizes.items()),
        synthetic=SyntheticConfig(variant=variant, num_frames=frames, height=size, width=size),
        split_sizes=sizes,
    )


class SyntheticBuilder(tfds_lib.core.GeneratorBasedBuilder):
    """``jaxvx_synthetic``: the synthetic video benchmark with its ground truth, as a TFDS dataset.

    Named configs: ``motion_16x64``, ``motion_16x112``, ``walk_run_16x64``, ``walk_run_16x112`` (4000 train, 1000
    test and 1000 validation clips each), and ``motion_8x32``, a smoke-test size (200 / 50 / 50). For any other
    setting, pass ``config=SyntheticBuilderConfig(name=..., synthetic=SyntheticConfig(...), split_sizes=...)``.
    Every example holds the keys of :func:`jaxvx.data.render_clip` (``flow`` only when the config asks for it).
    """

    name = "jaxvx_synthetic"
    VERSION = tfds_lib.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [
        *(_named(v, 16, s) for v in ("motion", "walk_run") for s in (64, 112)),
        _named("motion", 8, 32, {"train": 200, "test": 50, "validation": 50}),
    ]

    def __init__(self, *, file_format=None, **kwargs):
        super().__init__(file_format=file_format or "array_record", **kwargs)

    def _info(self) -> tfds_lib.core.DatasetInfo:
        cfg: SyntheticConfig = self.builder_config.synthetic
        t, h, w = cfg.num_frames, cfg.height, cfg.width
        tensor = tfds_lib.features.Tensor
        features = {
            "video": tensor(shape=(t, h, w, 3), dtype=np.uint8, encoding="zlib"),
            "label": tfds_lib.features.ClassLabel(names=list(cfg.class_names)),
            "boxes": tensor(shape=(t, 4), dtype=np.float32),
            "present": tensor(shape=(t,), dtype=np.bool_),
            "segment": tensor(shape=(2,), dtype=np.int64),
            "actor": tensor(shape=(t, h, w), dtype=np.bool_, encoding="zlib"),
            "distractors": tensor(shape=(t, h, w), dtype=np.bool_, encoding="zlib"),
            "motion": tensor(shape=(t, h, w), dtype=np.bool_, encoding="zlib"),
            "cue_box": tensor(shape=(4,), dtype=np.float32),
            "cue_label": tensor(shape=(), dtype=np.int64),
            "index": tensor(shape=(), dtype=np.int64),
        }
        if cfg.flow:
            features["flow"] = tensor(shape=(t, h, w, 2), dtype=np.float32, encoding="zlib")
        return tfds_lib.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds_lib.features.FeaturesDict(features),
            supervised_keys=("video", "label"),
            disable_shuffling=True,  # record i is clip i, as in the in-memory source
            metadata=tfds_lib.core.MetadataDict(synthetic=cfg.to_dict()),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download: every clip is rendered
        return {split: self._generate_examples(split, n) for split, n in self.builder_config.split_sizes.items()}

    def _generate_examples(self, split: str, num_clips: int):
        cfg = self.builder_config.synthetic
        for index in range(num_clips):
            yield index, render_clip(cfg, split, index)


def build_synthetic_tfds(config: str | SyntheticBuilderConfig = "motion_16x64", *, data_dir=None) -> str:
    """Build (or find already built) the synthetic benchmark as a TFDS dataset; returns its folder."""
    builder = SyntheticBuilder(config=config, data_dir=data_dir)
    builder.download_and_prepare()
    return os.fspath(builder.data_dir)


def _to_python(value: Any) -> Any:
    value = np.asarray(value)
    return value.item() if value.ndim == 0 and value.dtype != object else value


class TFDSVideos(Sequence):
    """A random-access source over a TFDS data source; records are dicts of numpy arrays with ``label`` an int."""

    def __init__(self, source, *, name: str, split: str, class_names: Sequence[str] | None):
        self._source = source
        self.name = name
        self.split = split
        self.class_names = None if class_names is None else tuple(class_names)

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} records of {self.name}[{self.split}]")
        record = self._source[int(index)]
        out = {key: _to_python(value) for key, value in record.items()}
        if "video" not in out or "label" not in out:
            raise KeyError(f"{self.name} records must have 'video' and 'label' keys, got {sorted(out)}")
        return out

    def __repr__(self) -> str:
        return f"TFDSVideos({self.name!r}, split={self.split!r}, {len(self)} records)"


def tfds(name: str | os.PathLike, split: str, *, data_dir=None, download: bool = True) -> TFDSVideos:
    """A TFDS dataset split as a random-access source (``tfds.data_source``: array_record, no TensorFlow needed).

    Args:
        name: a registered TFDS name, e.g. ``"jaxvx_synthetic/motion_16x64"`` (built on first use when
            ``download=True``: the clips are rendered, nothing is downloaded) or ``"ucf101"``; or the folder of a
            prepared dataset version (the one holding ``dataset_info.json``), read with
            ``tfds.builder_from_directory``.
        split: a TFDS split string, e.g. ``"train"`` or ``"test[:100]"``.
        data_dir: TFDS data directory (default: TFDS's, ``~/tensorflow_datasets``).
        download: build or download the dataset if it is not prepared yet.

    Returns:
        A :class:`TFDSVideos`; ``source[i]`` is a dict with ``video`` uint8 ``[T, H, W, 3]``, ``label`` int and the
        dataset's other features.

    TFDS video datasets such as ``ucf101`` store frames with ``tfds.features.Video``, which decodes through
    TensorFlow, and are prepared as TFRecord by default. To read one: ``pip install "jaxvx[tf]"``; build it as
    array_record once with TensorFlow, e.g. ``tfds build ucf101 --file_format=array_record`` (this downloads the
    videos from their host, or use ``--manual_dir`` with files you already have); then ``jaxvx.data.tfds("ucf101",
    "train", download=False)``.
    """
    if os.path.isfile(os.path.join(os.fspath(name), "dataset_info.json")):
        builder = tfds_lib.builder_from_directory(os.fspath(name))
        source = builder.as_data_source(split=split)
        info = builder.info
    elif name.split("/")[0] == SyntheticBuilder.name:
        config = name.split("/", 1)[1] if "/" in name else None
        known = [c.name for c in SyntheticBuilder.BUILDER_CONFIGS]
        if config is not None and config not in known:
            raise ValueError(f"unknown {SyntheticBuilder.name} config {config!r}; named configs are {known}")
        builder = SyntheticBuilder(config=config, data_dir=data_dir)
        if download:
            builder.download_and_prepare()
        source = builder.as_data_source(split=split)
        info = builder.info
    else:
        try:
            source = tfds_lib.data_source(name, split=split, data_dir=data_dir, download=download)
            info = tfds_lib.builder(name, data_dir=data_dir).info
        except Exception as error:  # TFDS raises many types; name the dataset and the likely fix
            raise ValueError(
                f"cannot open TFDS dataset {name!r} split {split!r} as a data source (array_record): {error}. "
                "Video datasets such as ucf101 need TensorFlow (pip install 'jaxvx[tf]') and must be built with "
                "--file_format=array_record; see jaxvx.data.tfds's docstring."
            ) from error
    label = info.features["label"] if "label" in info.features else None
    names = getattr(label, "names", None)
    return TFDSVideos(source, name=os.fspath(name), split=split, class_names=names)
