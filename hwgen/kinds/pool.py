"""What the window pools share (``maxpool2d``, ``sumpool2d``): square windows with a stride and
padding, floor mode, and the windows of a batch."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .base import Layer, ModelError
from .matrix import pair

__all__ = ["Pool2d", "pool_windows", "pool_check", "geometry_of"]


def pool_windows(x: np.ndarray, size: int, stride: int, padding: int, fill: int) -> np.ndarray:
    """``(N, C, H, W)`` → ``(N, C, OH, OW, size, size)``: every pool window, floor mode, the
    padding filled with ``fill``."""
    if padding:
        x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)), constant_values=fill)
    return sliding_window_view(x, (size, size), axis=(2, 3))[:, :, ::stride, ::stride]


def pool_check(m) -> str | None:
    """Why a PyTorch max pool module cannot be mapped (a square kernel, stride and padding, no
    dilation, floor mode), or None."""
    k, s = m.kernel_size, m.stride if m.stride is not None else m.kernel_size
    if (len(set(pair(k))) != 1 or len(set(pair(s))) != 1 or len(set(pair(m.padding))) != 1
            or pair(m.dilation) != (1, 1) or m.ceil_mode):
        return " with these options: only a square kernel, stride and padding, no dilation, floor mode"
    return None


@dataclass
class Pool2d(Layer):
    """A pool over ``size``×``size`` windows, stride ``stride`` (``None``: ``size``), ``padding``
    on every side (at most half the window, PyTorch's rule), floor mode."""

    size: int = 2
    stride: int | None = None
    padding: int = 0

    def __post_init__(self):
        if self.stride is None:
            self.stride = self.size
        for key, least in (("size", 1), ("stride", 1), ("padding", 0)):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < least:
                raise ModelError(f"{self.name}: {key} must be an integer >= {least}, not {v!r}")
            setattr(self, key, int(v))
        if 2 * self.padding > self.size:
            raise ModelError(f"{self.name}: padding {self.padding} is more than half the pool size "
                             f"{self.size}")

    def params(self):
        # ``stride`` and ``padding`` only when not the defaults: older models read the same.
        out = {"size": int(self.size)}
        if self.stride != self.size:
            out["stride"] = int(self.stride)
        if self.padding:
            out["padding"] = int(self.padding)
        return out

    def out_shape(self, in_shape):
        if len(in_shape) != 3:
            raise ModelError(f"{self.name}: expects a C×H×W input, got shape {in_shape}")
        c, h, w = in_shape
        k, s, p = self.size, self.stride, self.padding
        if h + 2 * p < k or w + 2 * p < k:
            raise ModelError(f"{self.name}: input {h}×{w} smaller than the pool size {k}")
        return (c, (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1)


def geometry_of(module) -> dict:
    """``size``, ``stride``, ``padding`` of a square PyTorch pool module."""
    s = module.stride if module.stride is not None else module.kernel_size
    return {"size": int(pair(module.kernel_size)[0]), "stride": int(pair(s)[0]),
            "padding": int(pair(module.padding)[0])}
