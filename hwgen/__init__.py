"""hwgen: trained multiplication-free networks to verified FPGA accelerators.

``hwgen.convert(model, calibration, test, ...)`` is the Python API (:mod:`hwgen.api`); it is
imported on first use, so that ``import hwgen.hw`` does not pull in PyTorch.
"""

import sys as _sys
from importlib.util import spec_from_file_location as _spec_from_file_location
from pathlib import Path as _Path

__version__ = "0.1.0"

#: Top-level folders of the source tree that are subpackages of hwgen. The wheel maps them into
#: the package (``package_dir`` in setup.py); from a source tree, this finder does.
_MAPPED = {"hwgen.sim": "sim", "hwgen.boards": "boards"}


class _SourceTreeFinder:
    """Finds ``hwgen.sim`` and ``hwgen.boards`` in ``sim/`` and ``boards/`` beside ``hwgen/``."""

    root = _Path(__file__).resolve().parent.parent

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        folder = _MAPPED.get(name)
        init = cls.root / folder / "__init__.py" if folder else None
        if init is None or not init.is_file():
            return None
        return _spec_from_file_location(name, init, submodule_search_locations=[str(init.parent)])


# First, before a stale hwgen/sim/__pycache__ can pass for a namespace package; not in a wheel.
if not all((_Path(__file__).parent / n.split(".")[1] / "__init__.py").is_file() for n in _MAPPED):
    _sys.meta_path.insert(0, _SourceTreeFinder)

__all__ = ["convert", "Build"]


def __getattr__(name):
    if name in ("convert", "Build"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'hwgen' has no attribute {name!r}")
