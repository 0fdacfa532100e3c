"""Builds jaxvx's one native piece, on request: oneDNN convolutions for XLA's CPU backend (csrc/onednn_conv.cc).

Everything else is in pyproject.toml. By default nothing is compiled and the wheel is pure Python
(``py3-none-any``); jaxvx's models then run their convolutions through XLA (``jaxvx.models.conv_form``).
``JAXVX_BUILD_ONEDNN=1`` builds the extension (Linux x86-64, a C++17 compiler): it adds oneDNN's headers and library
and jaxlib's XLA FFI headers to the build requirements, and the wheel is then platform-specific; install it with the
``onednn`` extra, which brings oneDNN's runtime library (``JAXVX_BUILD_ONEDNN=1 pip install ".[onednn]"``). Asked
for and impossible, the build fails naming what is missing.
"""

import os
import platform
import sys
from importlib import metadata

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

SWITCH = "JAXVX_BUILD_ONEDNN"
# the build requirements of the extension: oneDNN's headers and library, and the XLA FFI headers of jaxlib
BUILD_REQUIRES = [
    "onednn-devel-cpu-gomp==2023.2.0",
    "onednn-cpu-gomp==2023.2.0",
    "jaxlib==0.10.2",
]


def _requested() -> bool:
    """Whether ``$JAXVX_BUILD_ONEDNN`` asks for the extension (``1``; ``0`` or unset: not)."""
    value = os.environ.get(SWITCH, "0").strip()
    if value not in ("0", "1", ""):
        raise SystemExit(f"jaxvx: {SWITCH} must be 0 or 1, got {value!r}")
    return value == "1"


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


class _BuildOneDNN(build_ext):
    """``build_ext`` that finds oneDNN's and jaxlib's folders when it runs, in the environment the build
    requirements were installed into (``setup.py`` itself runs before, to list them)."""

    def build_extensions(self):
        try:
            include = [_folder_of("onednn-devel-cpu-gomp", "oneapi/dnnl/dnnl.hpp"),
                       _folder_of("jaxlib", "xla/ffi/api/ffi.h")]
            lib = _folder_of("onednn-cpu-gomp", "libdnnl.so")
        except (metadata.PackageNotFoundError, FileNotFoundError) as err:
            raise SystemExit(f"jaxvx: {SWITCH}=1 needs {BUILD_REQUIRES} in the build environment ({err}); pip "
                             "installs them unless --no-build-isolation is given") from None
        for ext in self.extensions:
            ext.include_dirs += include
            ext.library_dirs.append(lib)
        super().build_extensions()


def _extension() -> Extension:
    """The oneDNN extension (its folders are found by :class:`_BuildOneDNN`); raises ``SystemExit`` off Linux x86-64."""
    if not (sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")):
        raise SystemExit(f"jaxvx: {SWITCH}=1 builds on Linux x86-64 only, not {sys.platform} {platform.machine()}")
    # -g0 and -s: no debug information (Python's CFLAGS carry -g: 2 MB with it)
    return Extension("jaxvx._onednn_conv", ["csrc/onednn_conv.cc"], libraries=["dnnl"], language="c++",
                     extra_compile_args=["-std=c++17", "-O2", "-g0", "-Wno-attributes", "-Wno-return-type"],
                     extra_link_args=["-s"])


if _requested():
    setup(ext_modules=[_extension()], cmdclass={"build_ext": _BuildOneDNN}, setup_requires=BUILD_REQUIRES)
else:
    setup()
