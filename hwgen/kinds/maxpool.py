"""Max pooling over ``size``×``size`` windows, any stride and padding (floor mode): the kind
``maxpool2d``; from ``torch.nn.MaxPool2d`` (square kernel, stride and padding, floor mode)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .base import Op, Quantizer, register, width
from .pool import Pool2d, geometry_of, pool_check, pool_windows

__all__ = ["MaxPool2d", "maxpool"]


def maxpool(layer: "MaxPool2d", x: np.ndarray) -> np.ndarray:
    """``(N, C, H, W)`` → ``(N, C, OH, OW)``, the maximum of every window; a padded position
    never wins (it holds the smallest int64)."""
    fill = np.iinfo(np.int64).min
    return pool_windows(x, layer.size, layer.stride, layer.padding, fill).max(axis=(4, 5))


@register
@dataclass
class MaxPool2d(Pool2d):
    """Max pooling (see :class:`~.pool.Pool2d`); a padded position never wins (PyTorch pads
    with minus infinity)."""

    kind: ClassVar[str] = "maxpool2d"
    label: ClassVar[str] = "max pool"

    def out_range(self, lo, hi):
        return lo, hi

    def execute(self, x):
        return maxpool(self, x)

    def ops(self, in_shape, out_shape, in_range, out_range):
        """``size²-1`` compares per output element, at the element width."""
        return [Op("compare", width(*in_range), int(np.prod(out_shape)) * (self.size ** 2 - 1))]


class _PoolQuantizer(Quantizer):
    prefix = "pool"

    def modules(self):
        from torch import nn
        return (nn.MaxPool2d,)

    def check(self, m):
        return pool_check(m)

    def layer(self, module, name):
        return MaxPool2d(name=name, **geometry_of(module))


MaxPool2d.quantizers = (_PoolQuantizer(),)
