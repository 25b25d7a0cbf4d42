"""hwgen: trained multiplication-free networks to verified FPGA accelerators.

``hwgen.convert(model, calibration, test, ...)`` is the Python API (:mod:`hwgen.api`); it is
imported on first use, so that ``import hwgen.hw`` does not pull in PyTorch.
"""

__version__ = "0.1.0"

__all__ = ["convert", "Build"]


def __getattr__(name):
    if name in ("convert", "Build"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'hwgen' has no attribute {name!r}")
