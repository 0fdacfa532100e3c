"""Builds jaxvx's one native piece: oneDNN convolutions for XLA's CPU backend (csrc/onednn_conv.cc).

Everything else is in pyproject.toml. The extension is optional: where it cannot be built (no C++ compiler, not
Linux x86-64, oneDNN or jaxlib's FFI headers missing), the install goes on without it and jaxvx's models run their
convolutions through XLA (``jaxvx.models.conv_form``).
"""

import os
import platform
import sys
from importlib import metadata

from setuptools import Extension, setup


def _folder_of(dist: str, suffix: str) -> str:
    """The folder that holds ``suffix`` (a file path ending) among the files the distribution ``dist`` installed.

    oneDNN's wheels put their headers and library outside site-packages (``<prefix>/include``, ``<prefix>/lib``),
    which pip's isolated build environments place in a temporary prefix: look them up instead of guessing.
    """
    d = metadata.distribution(dist)
    for f in d.files or ():
        if f.as_posix().endswith("/" + suffix) or f.as_posix() == suffix:
            path = os.path.normpath(str(d.locate_file(f)))
            return path[: len(path) - len(suffix) - 1]
    raise FileNotFoundError(f"{dist} installed no {suffix}")


def _extensions():
    if not (sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")):
        return []
    try:
        include = [_folder_of("onednn-devel-cpu-gomp", "oneapi/dnnl/dnnl.hpp"),
                   _folder_of("jaxlib", "xla/ffi/api/ffi.h")]
        lib = _folder_of("onednn-cpu-gomp", "libdnnl.so")
    except Exception as err:  # noqa: BLE001 - any failure means: build without the extension
        print(f"jaxvx: building without the oneDNN convolutions ({err})", file=sys.stderr)
        return []
    return [Extension("jaxvx._onednn_conv", ["csrc/onednn_conv.cc"], include_dirs=include, library_dirs=[lib],
                      libraries=["dnnl"], extra_compile_args=["-std=c++17", "-O2", "-Wno-attributes",
                                                              "-Wno-return-type"],
                      language="c++", optional=True)]


setup(ext_modules=_extensions())
