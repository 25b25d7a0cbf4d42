"""Average pooling without its divider: the kinds ``sumpool2d`` (``torch.nn.AvgPool2d``: square,
floor mode, ``count_include_pad``) and ``global_sumpool2d`` (``torch.nn.AdaptiveAvgPool2d(1)``).

The integer layer is the sum of a window; the divider ``d`` (``size²``, ``divisor_override``,
or ``H·W``) goes into the scale: the sum's codes are worth ``1/d`` of the activations', which
the next weight layer's input scale (and so its requantizer) takes, so the hardware has no
divider (:mod:`hwgen.quant`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .base import Layer, ModelError, Op, Quantizer, register, width
from .matrix import pair
from .pool import Pool2d, geometry_of, pool_windows

__all__ = ["SumPool2d", "GlobalSumPool2d", "sumpool"]


def sumpool(layer: "SumPool2d", x: np.ndarray) -> np.ndarray:
    """``(N, C, H, W)`` → ``(N, C, OH, OW)``, the sum of every window (zero padding)."""
    return pool_windows(x, layer.size, layer.stride, layer.padding, 0).sum(axis=(4, 5))


def _sum_range(n: int, lo: int, hi: int) -> tuple[int, int]:
    # Every partial sum of up to n terms in [lo, hi] (or a padded 0) lies here: the
    # accumulator's width too.
    return n * min(lo, 0), n * max(hi, 0)


@register
@dataclass
class SumPool2d(Pool2d):
    """Sum over the windows of :class:`~.pool.Pool2d`, zero padding."""

    kind: ClassVar[str] = "sumpool2d"
    label: ClassVar[str] = "average pool (sum)"

    def out_range(self, lo, hi):
        return _sum_range(self.size * self.size, lo, hi)

    def execute(self, x):
        return sumpool(self, x)

    def ops(self, in_shape, out_shape, in_range, out_range):
        """``size²-1`` adds per output element, at the sum's width."""
        return [Op("add", width(*out_range), int(np.prod(out_shape)) * (self.size ** 2 - 1))]


@register
@dataclass
class GlobalSumPool2d(Layer):
    """Sum over the whole ``height``×``width`` map of each channel, to ``C×1×1``."""

    kind: ClassVar[str] = "global_sumpool2d"
    label: ClassVar[str] = "global average pool (sum)"
    height: int = 1
    width: int = 1

    def __post_init__(self):
        for key in ("height", "width"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ModelError(f"{self.name}: {key} must be a positive integer, not {v!r}")
            setattr(self, key, int(v))

    def params(self):
        return {"height": self.height, "width": self.width}

    def out_shape(self, in_shape):
        if len(in_shape) != 3 or tuple(in_shape[1:]) != (self.height, self.width):
            raise ModelError(f"{self.name}: sums a C×{self.height}×{self.width} map, got shape "
                             f"{tuple(in_shape)}")
        return (in_shape[0], 1, 1)

    def out_range(self, lo, hi):
        return _sum_range(self.height * self.width, lo, hi)

    def execute(self, x):
        return x.sum(axis=(2, 3), keepdims=True)

    def ops(self, in_shape, out_shape, in_range, out_range):
        """``H·W-1`` adds per channel, at the sum's width."""
        return [Op("add", width(*out_range), int(np.prod(out_shape)) * (self.height * self.width - 1))]


class _AvgPoolQuantizer(Quantizer):
    prefix = "pool"

    def modules(self):
        from torch import nn
        return (nn.AvgPool2d,)

    def check(self, m):
        if (len(set(pair(m.kernel_size))) != 1 or len(set(pair(m.stride or m.kernel_size))) != 1
                or len(set(pair(m.padding))) != 1 or m.ceil_mode
                or (pair(m.padding)[0] and not m.count_include_pad)):
            return (" with these options: only a square kernel, stride and padding, floor mode, "
                    "count_include_pad with padding")
        return None

    def divisor(self, module, in_shape):
        k = int(pair(module.kernel_size)[0])
        return int(module.divisor_override or k * k)

    def layer(self, module, name):
        return SumPool2d(name=name, **geometry_of(module))


class _GlobalAvgPoolQuantizer(Quantizer):
    prefix = "pool"

    def modules(self):
        from torch import nn
        return (nn.AdaptiveAvgPool2d,)

    def check(self, m):
        if pair(m.output_size) != (1, 1):
            return f" with output_size {m.output_size}: only 1 (global average pooling)"
        return None

    def divisor(self, module, in_shape):
        return int(in_shape[2] * in_shape[3])

    def layer_for(self, module, name, in_shape):
        return GlobalSumPool2d(name=name, height=int(in_shape[2]), width=int(in_shape[3]))


SumPool2d.quantizers = (_AvgPoolQuantizer(),)
GlobalSumPool2d.quantizers = (_GlobalAvgPoolQuantizer(),)
