"""Multiplier layers, the baseline: ``y[o] = sum_k x_k * w[o, k]``.

The kinds ``conv2d`` and ``dense``; from ``torch.nn.Conv2d`` / ``torch.nn.Linear`` (a bias is
folded into the requantizer's bias; no groups or dilation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..arith import Arithmetic
from .base import Op, QuantizedLayer, register, swidth, width
from .matrix import ConvLayer, DenseLayer, MatrixQuantizer, pair

__all__ = ["Conv2d", "Dense", "mac_matrix"]


def mac_matrix(cols: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``sum_k cols[..., k] * weight[o, k]`` in exact int64."""
    return cols.astype(np.int64) @ weight.astype(np.int64).T


class _Mac:
    arithmetic: ClassVar[Arithmetic] = Arithmetic.MAC

    def product(self, cols):
        return mac_matrix(cols, self.weight.reshape(self.weight.shape[0], -1))

    def tap_op(self, lo, hi, count):
        w_lo, w_hi = int(self.weight.min()), int(self.weight.max())
        w_bits = width(w_lo, w_hi) if w_lo >= 0 else swidth(w_lo, w_hi)
        return Op("mult", (width(lo, hi), w_bits), count)


@register
@dataclass
class Conv2d(_Mac, ConvLayer):
    """Multiplier convolution (the baseline): ``y[o] = sum x * w``."""

    kind: ClassVar[str] = "conv2d"
    label: ClassVar[str] = "multiplier conv"


@register
@dataclass
class Dense(_Mac, DenseLayer):
    """Multiplier fully connected layer (the baseline): ``y[o] = sum_k x[k] * w[o, k]``."""

    kind: ClassVar[str] = "dense"
    label: ClassVar[str] = "multiplier dense"


# --------------------------------------------------------------------------- quantizer

def mac_weights(module, weight_bits: int, per_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric integer weights and the weight scale of every output channel."""
    w_lim = (1 << (weight_bits - 1)) - 1
    w = module.weight.detach().double().numpy()
    flat = np.abs(w).reshape(len(w), -1)
    peak = flat.max(axis=1) if per_channel else np.full(len(w), flat.max())
    ws = np.where(peak > 0, peak / w_lim, 1.0)
    scale = ws.reshape((-1,) + (1,) * (w.ndim - 1))
    wq = np.clip(np.round(w / scale), -w_lim, w_lim).astype(np.int64)
    return wq, ws


class _MacQuantizer(MatrixQuantizer):
    """``torch.nn.Conv2d`` → :class:`Conv2d`, ``torch.nn.Linear`` → :class:`Dense`: symmetric
    ``weight_bits`` integers with one scale per output channel (``mac_per_channel``) or per
    layer, in ``meta["channel_scales"]``."""

    def torch_pair(self):
        from torch import nn
        return nn.Conv2d, nn.Linear

    def check(self, m):
        if not self._conv:
            return None
        stride, padding = pair(m.stride), m.padding
        if (isinstance(padding, str) or pair(padding)[0] != pair(padding)[1]
                or stride[0] != stride[1] or pair(m.dilation) != (1, 1) or m.groups != 1
                or m.padding_mode != "zeros"):
            return (" with these options: only equal stride and padding in both dimensions, "
                    "zero padding, no dilation, groups=1")
        return None

    def bias(self, module):
        return getattr(module, "bias", None)

    def quantize(self, module, name, s_in, options):
        wq, ws = mac_weights(module, options["weight_bits"], options["mac_per_channel"])
        return QuantizedLayer(self.make(module, name, weight=wq), s_in * ws, s_in,
                              np.zeros(len(wq), dtype=np.int64),
                              {"channel_scales": [float(v) for v in ws]})


Conv2d.quantizers = (_MacQuantizer(Conv2d),)
Dense.quantizers = (_MacQuantizer(Dense),)
