"""DeepShift layers: ``y[o] = sum_k sign[o, k] * (x_k << shift[o, k])``, weights ``±2**p``.

The kinds ``shift_conv2d`` and ``shift_dense``; from ``hwgen.nn.ShiftConv2d`` / ``ShiftLinear``
(both forms).  Shift layers only shift *left* (``x << p``, ``p >= 0``), which is exact for a
negative ``x`` as well (a signed input occurs after a requantizer without ReLU) while the value
stays inside the derived range.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from ..arith import Arithmetic
from .base import ModelError, Op, QuantizedLayer, int_array, register, width
from .matrix import ConvLayer, DenseLayer, MatrixQuantizer

__all__ = ["ShiftConv2d", "ShiftDense", "split_power_of_two", "shift_matrix"]


def shift_matrix(cols: np.ndarray, sign: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """``sum_k sign[o, k] * (cols[..., k] << shift[o, k])`` in exact int64: ``(..., K)`` →
    ``(..., O)``.

    Computed as the hardware does, shift then signed add: for every shift amount ``p`` present,
    ``x << p`` is added with the signs of the weights that shift by ``p``.  Only left shifts
    occur (``shift >= 0``), and a left shift of an int64 is exact for any sign of ``x``
    (multiplication by ``2**p``) while the value stays in range (the derived ranges and
    ``max_shift <= 30`` keep it so).  The inputs are non-negative after a ReLU; they can be
    negative when the requantizer before has no ReLU, and the hardware's left shift of a
    two's-complement number is the same exact product.
    """
    x = cols.astype(np.int64)
    sign, shift = sign.astype(np.int64), shift.astype(np.int64)
    out = np.zeros(x.shape[:-1] + (sign.shape[0],), dtype=np.int64)
    for p in np.unique(shift[sign != 0]):
        out += (x << p) @ np.where(shift == p, sign, 0).T
    return out


def _check_max_shift(name, max_shift) -> int:
    if (isinstance(max_shift, bool) or not isinstance(max_shift, (int, np.integer))
            or not 0 <= max_shift <= 30):
        raise ModelError(f"{name}: max_shift must be an integer in [0, 30], got {max_shift!r}")
    return int(max_shift)


def split_power_of_two(name: str, weight, ndim: int,
                       max_shift: int) -> tuple[np.ndarray, np.ndarray]:
    """``(sign, shift)`` with ``weight == sign << shift``, or :class:`ModelError` naming the
    first bad entry.

    Every entry must be 0 or ``±2**p`` with ``0 <= p <= max_shift``; a zero weight gets shift 0.
    """
    max_shift = _check_max_shift(name, max_shift)
    w = int_array(f"{name}.weight", weight, ndim)
    mag = np.abs(w)  # abs of the most negative int64 stays negative: refused below with the rest
    power = (mag > 0) & ((mag & (mag - 1)) == 0)
    ok = (w == 0) | (power & (mag <= (1 << max_shift)))
    if not ok.all():
        idx = tuple(int(v) for v in np.argwhere(~ok)[0])
        value = int(w[idx])
        hint = f"; raise max_shift to {abs(value).bit_length() - 1}" if power[idx] else ""
        raise ModelError(f"{name}: weight[{', '.join(map(str, idx))}] = {value} is not a signed "
                         f"power of two (0 or ±2**p, 0 <= p <= {max_shift}){hint}")
    shift = np.zeros(w.shape, dtype=np.int64)
    nz = w != 0
    # exact: powers <= 2**30
    shift[nz] = np.round(np.log2(mag[nz].astype(np.float64))).astype(np.int64)
    return np.sign(w).astype(np.int64), shift


class _Shift:
    """Shared part of the shift layers: ``sign`` and ``shift`` arrays, the weight
    ``sign << shift``.

    ``weight`` is derived (not stored, not a constructor argument) so the shape logic and the
    multiplier reference apply unchanged.  ``max_shift`` bounds every shift (it sizes the
    hardware's barrel shifter); at most 30 so that ``x << shift`` stays far inside int64.
    A layer written by hand from a ``weight`` array goes through :meth:`from_weight`, which
    refuses any entry that is not 0 or a signed power of two in range.
    """

    _ndim: ClassVar[int] = 0
    array_fields: ClassVar[tuple[str, ...]] = ("sign", "shift")
    arithmetic: ClassVar[Arithmetic] = Arithmetic.SHIFT
    _alternative: ClassVar[str] = " (or give 'weight')"

    @classmethod
    def from_weight(cls, name: str, weight, max_shift: int = 15, **params):
        """The layer whose integer weight is ``weight`` (every entry 0 or ``±2**p``,
        ``0 <= p <= max_shift``).

        ``params`` are the other fields (``stride``, ``padding`` for a conv).  Raises
        :class:`ModelError` naming the layer, the index and the value of the first entry that
        is not a signed power of two in range.
        """
        sign, shift = split_power_of_two(name, weight, cls._ndim, max_shift)
        return cls(name=name, sign=sign, shift=shift, max_shift=max_shift, **params)

    @classmethod
    def from_saved(cls, params, arrays, where):
        if "weight" in arrays:
            # A hand-written shift layer may give its integer weight instead of sign and shift.
            given = [k for k in cls.array_fields if k in arrays]
            if given:
                raise ModelError(f"{where}: the .npz gives both 'weight' and {given[0]!r}; "
                                 f"give either 'weight' or 'sign' and 'shift'")
            return cls.from_weight(weight=arrays["weight"], **params)
        return super().from_saved(params, arrays, where)

    def __post_init__(self):
        self._init_shift()
        super().__post_init__()

    def _init_shift(self):
        self.sign = int_array(f"{self.name}.sign", self.sign, self._ndim)
        self.shift = int_array(f"{self.name}.shift", self.shift, self._ndim)
        if self.sign.shape != self.shift.shape:
            raise ModelError(f"{self.name}: sign has shape {self.sign.shape} but shift has "
                             f"{self.shift.shape}; they must be the same (the weight shape)")
        self.max_shift = _check_max_shift(self.name, self.max_shift)
        if self.sign.size and not np.isin(self.sign, (-1, 0, 1)).all():
            bad = self.sign[~np.isin(self.sign, (-1, 0, 1))].flat[0]
            raise ModelError(f"{self.name}: sign must be -1, 0 or 1, found {bad}")
        if self.shift.size and self.shift.min() < 0:
            raise ModelError(f"{self.name}: shift must be >= 0 (the integer weight is "
                             f"sign << shift), found {self.shift.min()}")
        if self.shift.size and self.shift.max() > self.max_shift:
            raise ModelError(f"{self.name}: shift {self.shift.max()} exceeds "
                             f"max_shift={self.max_shift}; raise max_shift or narrow the "
                             f"exponent range")
        self.weight = self.sign << self.shift

    @classmethod
    def random(cls, rng, name, shape, **params):
        """Random sign in {-1, 0, 1} and shift in [0, 7] (``max_shift=7``)."""
        return cls(name, sign=rng.integers(-1, 2, size=shape), shift=rng.integers(0, 8, size=shape),
                   max_shift=7, **params)

    def _shift_params(self):
        return {"max_shift": int(self.max_shift)}

    def product(self, cols):
        o = self.sign.shape[0]
        return shift_matrix(cols, self.sign.reshape(o, -1), self.shift.reshape(o, -1))

    def tap_op(self, lo, hi, count):
        return Op("shift", width(lo, hi), count)


@register
@dataclass
class ShiftConv2d(_Shift, ConvLayer):
    """DeepShift convolution: ``y[o] = sum_{c,ky,kx} sign * (x[c, y+ky, x+kx] << shift)``.

    The integer weight is ``sign << shift`` with ``sign`` in ``{-1, 0, 1}``, ``shift`` in
    ``[0, max_shift]``; arrays of shape ``(O, C, KH, KW)``.
    """

    kind: ClassVar[str] = "shift_conv2d"
    label: ClassVar[str] = "DeepShift conv"
    _ndim: ClassVar[int] = 4
    weight: np.ndarray = field(default=None, init=False, repr=False)
    sign: np.ndarray = field(default=None, repr=False)
    shift: np.ndarray = field(default=None, repr=False)
    max_shift: int = 15

    def params(self):
        return {**super().params(), **self._shift_params()}


@register
@dataclass
class ShiftDense(_Shift, DenseLayer):
    """DeepShift fully connected layer: ``y[o] = sum_k sign[o, k] * (x[k] << shift[o, k])``."""

    kind: ClassVar[str] = "shift_dense"
    label: ClassVar[str] = "DeepShift dense"
    _ndim: ClassVar[int] = 2
    weight: np.ndarray = field(default=None, init=False, repr=False)
    sign: np.ndarray = field(default=None, repr=False)
    shift: np.ndarray = field(default=None, repr=False)
    max_shift: int = 15

    def params(self):
        return self._shift_params()


# --------------------------------------------------------------------------- quantizer

def shift_weights(name: str, module) -> tuple[np.ndarray, np.ndarray, int]:
    """``(sign, shift, max_shift)`` of a shift layer: the integer weight ``sign << (p - pmin)``."""
    sign, p = module.exported()
    max_shift = module.pmax - module.pmin
    if max_shift > 30:
        raise ModelError(f"quantize: shift layer {name!r} has prange ({module.pmin}, "
                         f"{module.pmax}), {max_shift} shifts wide; the integer model allows at "
                         f"most 30")
    return sign, (p - module.pmin).astype(np.int64), int(max_shift)


class _ShiftQuantizer(MatrixQuantizer):
    """``hwgen.nn.ShiftConv2d`` → :class:`ShiftConv2d`, ``ShiftLinear`` → :class:`ShiftDense`:
    the weights are exact, ``2**pmin`` goes into the accumulator's scale."""

    def torch_pair(self):
        from ..nn.shift import ShiftConv2d as TorchConv, ShiftLinear as TorchLinear
        return TorchConv, TorchLinear

    def quantize(self, module, name, s_in, options):
        sign, shift, max_shift = shift_weights(name, module)
        layer = self.make(module, name, sign=sign, shift=shift, max_shift=max_shift)
        acc = s_in * 2.0 ** module.pmin
        return QuantizedLayer(layer, np.full(len(sign), acc), acc,
                              np.zeros(len(sign), dtype=np.int64))


ShiftConv2d.quantizers = (_ShiftQuantizer(ShiftConv2d),)
ShiftDense.quantizers = (_ShiftQuantizer(ShiftDense),)
