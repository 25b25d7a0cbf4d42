"""The shared part of the weight-matrix kinds (conv and dense of every arithmetic).

A conv layer is a dense layer over the im2col patches of its input: :class:`ConvLayer` and
:class:`DenseLayer` hold the geometry, the shapes, the range rule and the executor, and each
kind module (:mod:`~hwgen.kinds.adder`, :mod:`~hwgen.kinds.shift`, :mod:`~hwgen.kinds.conv`)
gives its arithmetic: ``product`` (the
``(..., K) → (..., O)`` kernel of the golden model) and ``tap_op`` (the energy of one tap).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..arith import Arithmetic, l1_range, mac_range
from .base import Layer, ModelError, Op, Quantizer, int_array, swidth, width

__all__ = ["ConvLayer", "DenseLayer", "MatrixQuantizer", "im2col", "matrix_range", "pair",
           "conv_geometry"]


def im2col(x: np.ndarray, kh: int, kw: int, stride: int, padding: int) -> np.ndarray:
    """``(N, C, H, W)`` → ``(N, OH*OW, C*KH*KW)``, zero padded, in PyTorch's unfold order."""
    if padding:
        x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    win = sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]
    n, c, oh, ow = win.shape[:4]
    return win.transpose(0, 2, 3, 1, 4, 5).reshape(n, oh * ow, c * kh * kw), (oh, ow)


def pair(v) -> tuple:
    """A PyTorch size argument (an int or a pair) as a pair."""
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def conv_geometry(module) -> dict:
    """``{"stride", "padding"}`` of a PyTorch conv-type module, as ints (square ones)."""
    return {"stride": int(pair(module.stride)[0]), "padding": int(pair(module.padding)[0])}


def matrix_range(arithmetic: Arithmetic, weight: np.ndarray, lo, hi) -> tuple[int, int]:
    """Output interval of a conv or dense layer, its weight flattened to ``(O, K)``: the l1 rule
    for ``L1``, the multiply-accumulate rule for ``MAC`` and ``SHIFT`` (a shift is a product by
    its weight ``sign << shift``)."""
    fn = l1_range if arithmetic is Arithmetic.L1 else mac_range
    return fn(weight.reshape(weight.shape[0], -1), lo, hi)


class _Matrix:
    """Range, ops and the golden product of a layer whose weight is ``(O, ...)``."""

    @classmethod
    def random(cls, rng, name, shape, **params):
        """Random int8 weights."""
        return cls(name, weight=rng.integers(-128, 128, size=shape), **params)

    def product(self, cols: np.ndarray) -> np.ndarray:
        """The kind's ``(..., K) → (..., O)`` integer product (the golden model's kernel)."""
        raise NotImplementedError

    def tap_op(self, lo: int, hi: int, count: int) -> Op:
        """The ``count`` products of inputs in ``[lo, hi]`` with the weights (energy)."""
        raise NotImplementedError

    def out_range(self, lo, hi):
        return matrix_range(self.arithmetic, self.weight, *self._range_in(lo, hi))

    def ops(self, in_shape, out_shape, in_range, out_range):
        w = self.weight.reshape(self.weight.shape[0], -1)
        o, k = w.shape
        pixels = int(np.prod(out_shape[1:])) if len(out_shape) == 3 else 1
        lo, hi = self._range_in(*in_range)
        n = pixels * o
        ops = [self.tap_op(lo, hi, n * k)]
        if k > 1:
            ops.append(Op("add", swidth(*out_range), n * (k - 1)))
        return ops

    def _in_width(self, lo, hi) -> int:
        return width(lo, hi)


@dataclass
class ConvLayer(_Matrix, Layer):
    """A 2-D convolution with weight ``(O, C, KH, KW)``, square ``stride`` and zero ``padding``."""

    weight: np.ndarray = field(default=None, repr=False)  # (O, C, KH, KW)
    stride: int = 1
    padding: int = 0
    array_fields: ClassVar[tuple[str, ...]] = ("weight",)

    def __post_init__(self):
        self.weight = int_array(f"{self.name}.weight", self.weight, 4)
        if self.stride < 1 or self.padding < 0:
            raise ModelError(f"{self.name}: stride must be >= 1 and padding >= 0")

    @property
    def kernel(self) -> tuple[int, int]:
        return self.weight.shape[2], self.weight.shape[3]

    def params(self):
        return {"stride": int(self.stride), "padding": int(self.padding)}

    def out_shape(self, in_shape):
        if len(in_shape) != 3:
            raise ModelError(f"{self.name}: expects a C×H×W input, got shape {in_shape}")
        c, h, w = in_shape
        o, wc, kh, kw = self.weight.shape
        if wc != c:
            raise ModelError(f"{self.name}: weight has {wc} input channels, input has {c}")
        oh = (h + 2 * self.padding - kh) // self.stride + 1
        ow = (w + 2 * self.padding - kw) // self.stride + 1
        if oh < 1 or ow < 1:
            raise ModelError(f"{self.name}: kernel {kh}×{kw} larger than padded input {h}×{w}")
        return (o, oh, ow)

    def _range_in(self, lo, hi):
        # Zero padding feeds the value 0 into the receptive field.
        return (min(lo, 0), max(hi, 0)) if self.padding else (lo, hi)

    def execute(self, x):
        o, _, kh, kw = self.weight.shape
        cols, (oh, ow) = im2col(x, kh, kw, self.stride, self.padding)
        y = self.product(cols)  # (N, L, O)
        return y.transpose(0, 2, 1).reshape(x.shape[0], o, oh, ow)


@dataclass
class DenseLayer(_Matrix, Layer):
    """A fully connected layer with weight ``(O, K)`` on a flat input."""

    weight: np.ndarray = field(default=None, repr=False)  # (O, K)
    array_fields: ClassVar[tuple[str, ...]] = ("weight",)

    def __post_init__(self):
        self.weight = int_array(f"{self.name}.weight", self.weight, 2)

    def out_shape(self, in_shape):
        if len(in_shape) != 1:
            raise ModelError(f"{self.name}: expects a flat input, got shape {in_shape}; "
                             f"add a flatten layer")
        if in_shape[0] != self.weight.shape[1]:
            raise ModelError(f"{self.name}: weight takes {self.weight.shape[1]} inputs, "
                             f"input has {in_shape[0]}")
        return (self.weight.shape[0],)

    def _range_in(self, lo, hi):
        return lo, hi

    def execute(self, x):
        return self.product(x)


class MatrixQuantizer(Quantizer):
    """The quantizer of one conv or dense kind ``layer_cls``: a subclass gives ``torch_pair``
    (the PyTorch conv and linear classes, imported when called) and ``quantize``, and makes its
    layer with :meth:`make` (a conv takes the module's stride and padding)."""

    weighted = True

    def __init__(self, layer_cls: type):
        self._cls = layer_cls
        self._conv = issubclass(layer_cls, ConvLayer)
        self.prefix = "conv" if self._conv else "dense"
        self.rank = 4 if self._conv else 2

    def torch_pair(self) -> tuple[type, type]:
        raise NotImplementedError

    def modules(self):
        return (self.torch_pair()[0 if self._conv else 1],)

    def make(self, module, name: str, **values) -> Layer:
        return self._cls(name=name, **values, **(conv_geometry(module) if self._conv else {}))
