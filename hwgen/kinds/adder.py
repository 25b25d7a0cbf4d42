"""AdderNet layers: ``y[o] = -sum_k |x_k - w[o, k]|``, the l1 distance to the weights.

The kinds ``adder_conv2d`` and ``adder_dense``; from ``hwgen.nn.AdderConv2d`` / ``AdderLinear``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..arith import Arithmetic
from .base import BLOCK_ELEMENTS, Op, QuantizedLayer, register, swidth
from .matrix import ConvLayer, DenseLayer, MatrixQuantizer

__all__ = ["AdderConv2d", "AdderDense", "l1_matrix"]


def l1_matrix(cols: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``-sum_k |cols[..., k] - weight[o, k]|``: ``(..., K)`` × ``(O, K)`` → ``(..., O)``."""
    lead = cols.shape[:-1]
    flat = cols.reshape(-1, cols.shape[-1]).astype(np.int64)
    w = weight.astype(np.int64)
    rows = max(1, BLOCK_ELEMENTS // max(1, w.size))
    out = np.empty((flat.shape[0], w.shape[0]), dtype=np.int64)
    for start in range(0, flat.shape[0], rows):
        block = flat[start:start + rows]
        out[start:start + rows] = -np.abs(block[:, None, :] - w[None, :, :]).sum(axis=2)
    return out.reshape(*lead, w.shape[0])


class _Adder:
    arithmetic: ClassVar[Arithmetic] = Arithmetic.L1

    def product(self, cols):
        return l1_matrix(cols, self.weight.reshape(self.weight.shape[0], -1))

    def tap_op(self, lo, hi, count):
        w = self.weight
        return Op("absdiff", swidth(lo - int(w.max()), hi - int(w.min())), count)


@register
@dataclass
class AdderConv2d(_Adder, ConvLayer):
    """AdderNet convolution: ``y[o] = -sum_{c,ky,kx} |x[c, y+ky, x+kx] - w[o, c, ky, kx]|``."""

    kind: ClassVar[str] = "adder_conv2d"
    label: ClassVar[str] = "AdderNet conv"


@register
@dataclass
class AdderDense(_Adder, DenseLayer):
    """AdderNet fully connected layer: ``y[o] = -sum_k |x[k] - w[o, k]|``."""

    kind: ClassVar[str] = "adder_dense"
    label: ClassVar[str] = "AdderNet dense"


# --------------------------------------------------------------------------- quantizer

def adder_weights(module, s_in: float, weight_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer adder weights on the input's scale, clipped, and the per-channel clipping offset."""
    w_lim = (1 << (weight_bits - 1)) - 1
    w_lo = -(1 << (weight_bits - 1))
    w = module.weight.detach().double().numpy()
    wq = np.round(w / s_in).astype(np.int64)
    # Clipping a weight changes |x - w| by a constant while x stays on the same side of it (see
    # hwgen.quant): acc_int = acc_true + offset, removed in the requantizer.
    clipped = np.clip(wq, w_lo, w_lim)
    offset = np.abs(wq - clipped).reshape(len(wq), -1).sum(axis=1)
    return clipped, offset


class _AdderQuantizer(MatrixQuantizer):
    """``hwgen.nn.AdderConv2d`` → :class:`AdderConv2d`, ``AdderLinear`` → :class:`AdderDense`.

    The input and the weights share one scale (the l1 distance subtracts them): ``s = max(a /
    top, w_max / (2**(weight_bits - 1) - 1))``, weights clipped to ``weight_bits`` with the
    clipping's per-channel constant in ``meta["adder_offsets"]`` (see :mod:`hwgen.quant`)."""

    def torch_pair(self):
        from ..nn.adder import AdderConv2d as TorchConv, AdderLinear as TorchLinear
        return TorchConv, TorchLinear

    def input_scale(self, module, a, top, signed, weight_bits):
        w = module.weight.detach().double().numpy()
        w_top = float(np.abs(w).max()) if signed else float(w.max())
        w_max = max(0.0, min(w_top, a))
        return max(a / top, w_max / ((1 << (weight_bits - 1)) - 1))

    def quantize(self, module, name, s_in, options):
        wq, offset = adder_weights(module, s_in, options["weight_bits"])
        return QuantizedLayer(self.make(module, name, weight=wq), np.full(len(wq), s_in), s_in,
                              offset,
                              {"adder_offsets": [int(v) for v in offset]})


AdderConv2d.quantizers = (_AdderQuantizer(AdderConv2d),)
AdderDense.quantizers = (_AdderQuantizer(AdderDense),)
