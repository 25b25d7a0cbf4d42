"""Max pooling over ``size``×``size`` windows, stride ``size``: the kind ``maxpool2d``;
from ``torch.nn.MaxPool2d`` (kernel = stride, no padding, floor mode)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .base import Layer, ModelError, Op, Quantizer, register, width
from .matrix import pair

__all__ = ["MaxPool2d", "maxpool"]


def maxpool(layer: "MaxPool2d", x: np.ndarray) -> np.ndarray:
    """``(N, C, H, W)`` → ``(N, C, H // size, W // size)``, the maximum of every window."""
    k = layer.size
    n, c, h, w = x.shape
    x = x[:, :, : h // k * k, : w // k * k]
    return x.reshape(n, c, h // k, k, w // k, k).max(axis=(3, 5))


@register
@dataclass
class MaxPool2d(Layer):
    """Max pooling over ``size``×``size`` windows with stride ``size`` (floor mode)."""

    kind: ClassVar[str] = "maxpool2d"
    label: ClassVar[str] = "max pool"
    size: int = 2

    def params(self):
        return {"size": int(self.size)}

    def out_shape(self, in_shape):
        if len(in_shape) != 3:
            raise ModelError(f"{self.name}: expects a C×H×W input, got shape {in_shape}")
        c, h, w = in_shape
        if h < self.size or w < self.size:
            raise ModelError(f"{self.name}: input {h}×{w} smaller than the pool size {self.size}")
        return (c, h // self.size, w // self.size)

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
        k, s = m.kernel_size, m.stride if m.stride is not None else m.kernel_size
        if (pair(k)[0] != pair(k)[1] or pair(s) != pair(k) or pair(m.padding) != (0, 0)
                or pair(m.dilation) != (1, 1) or m.ceil_mode):
            return " with these options: only square kernel = stride, no padding, floor mode"
        return None

    def layer(self, module, name):
        return MaxPool2d(name=name, size=int(pair(module.kernel_size)[0]))


MaxPool2d.quantizers = (_PoolQuantizer(),)
