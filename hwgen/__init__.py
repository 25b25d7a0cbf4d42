"""hwgen: trained multiplication-free networks to verified FPGA accelerators."""

import sys as _sys
from importlib.util import spec_from_file_location as _spec_from_file_location
from pathlib import Path as _Path

__version__ = "0.1.0"

#: Top-level folders of the source tree that are subpackages of hwgen. The wheel maps them into
#: the package (``package-dir`` in pyproject.toml); from a source tree, this finder does.
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


if not all((_Path(__file__).parent / name.split(".")[1]).is_dir() for name in _MAPPED):
    _sys.meta_path.append(_SourceTreeFinder)
