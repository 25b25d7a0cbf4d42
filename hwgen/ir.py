"""The integer model: the contract between the quantizer, the golden model and the hardware.

An integer model is a list of layers over integer tensors in PyTorch's NCHW layout.
It is saved as a versioned JSON manifest (``model.json``) next to a NumPy archive
(``model.npz``, loaded with ``allow_pickle=False``), and validated when loaded.

Value ranges (and so every bit width) are derived here, once, from the actual
integer weights: :func:`value_ranges` gives the exact worst-case interval of every
layer's output for any input in the declared input range.  The golden model checks
its tensors against them and the hardware sizes its accumulators from them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from .util import atomic_write

FORMAT = "hwgen-integer-model"
FORMAT_VERSION = 1


class ModelError(ValueError):
    """An integer model that is malformed, inconsistent or unsupported."""


# --------------------------------------------------------------------------- bit widths

def bits_for(lo: int, hi: int) -> tuple[int, bool]:
    """Smallest ``(width, signed)`` two's-complement / unsigned shape holding ``[lo, hi]``."""
    lo, hi = int(lo), int(hi)
    if lo > hi:
        raise ValueError(f"empty range [{lo}, {hi}]")
    if lo >= 0:
        return max(1, hi.bit_length()), False
    width = max((-lo - 1).bit_length(), hi.bit_length() if hi > 0 else 0) + 1
    return width, True


def signed_bits_for(lo: int, hi: int) -> int:
    """Width of a signed shape holding ``[lo, hi]`` (for values that are combined signed)."""
    width, signed = bits_for(lo, hi)
    return width if signed else width + 1


def csd(value: int) -> list[tuple[int, int]]:
    """Canonical signed-digit form of ``value``: a list of ``(sign, power)``, fewest terms.

    ``sum(sign << power)`` equals ``value``; used to requantize by shift-and-add.
    """
    value = int(value)
    terms = []
    power = 0
    while value != 0:
        if value & 1:
            digit = 2 - (value & 3)  # +1 if value % 4 == 1, -1 if value % 4 == 3
            terms.append((digit, power))
            value -= digit
        value >>= 1
        power += 1
    return terms


def csd_round(value: int, max_terms: int) -> int:
    """The integer nearest to ``value`` whose canonical signed-digit form has <= ``max_terms`` digits.

    Ties go to the smaller magnitude.  ``max_terms`` must be >= 1.
    """
    if max_terms < 1:
        raise ValueError(f"requant_terms must be >= 1, got {max_terms}")
    value = int(value)
    if len(csd(value)) <= max_terms:
        return value
    sign = -1 if value < 0 else 1
    mag = abs(value)
    d = 1
    while True:
        for cand in (mag - d, mag + d):
            if cand >= 0 and len(csd(cand)) <= max_terms:
                return sign * cand
        d += 1


# --------------------------------------------------------------------------- layers

_KINDS: dict[str, type["Layer"]] = {}


def register(cls):
    _KINDS[cls.kind] = cls
    return cls


def _int_array(name, value, ndim):
    arr = np.asarray(value)
    if arr.dtype.kind not in "iu":
        raise ModelError(f"{name}: expected an integer array, got dtype {arr.dtype}")
    if arr.ndim != ndim:
        raise ModelError(f"{name}: expected {ndim} dimensions, got shape {arr.shape}")
    if arr.size and arr.dtype.kind == "u" and int(arr.max()) > INT64_MAX:
        raise ModelError(f"{name}: value {int(arr.max())} does not fit int64")
    return arr.astype(np.int64)


INT64_MAX = (1 << 63) - 1


def _exact(value) -> np.ndarray:
    """``value`` as an array of Python integers: range derivations on it cannot wrap."""
    return np.asarray(value).astype(object)


def _fits(*bounds) -> None:
    """Raise ``OverflowError`` unless every bound is inside int64 (``Model`` adds the name)."""
    for b in bounds:
        if not -INT64_MAX - 1 <= int(b) <= INT64_MAX:
            raise OverflowError(int(b))


def _mag(coef, lo, hi):
    """Bound of every partial sum of ``sum_k coef[..., k] * x_k``, ``|x_k| <= max(|lo|, |hi|)``."""
    bound = np.maximum(np.abs(_exact(lo)), np.abs(_exact(hi)))
    return np.asarray((np.abs(coef) * bound).sum(axis=-1)).max()


@dataclass
class Layer:
    """Base of all layer kinds. ``name`` is unique within a model."""

    name: str
    kind: ClassVar[str] = ""
    array_fields: ClassVar[tuple[str, ...]] = ()

    # Subclasses override these three.
    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        raise NotImplementedError

    def out_range(self, lo: int, hi: int) -> tuple[int, int]:
        """Exact interval of the output for any input with values in ``[lo, hi]``."""
        raise NotImplementedError

    def params(self) -> dict:
        return {}

    # Shared machinery.
    def to_json(self) -> dict:
        return {"kind": self.kind, "name": self.name, **self.params()}

    def arrays(self) -> dict[str, np.ndarray]:
        return {f: getattr(self, f) for f in self.array_fields}


def abs_diff_range(w, lo, hi) -> tuple[np.ndarray, np.ndarray]:
    """The one l1 range rule: elementwise interval ``(min, max)`` of ``|x - w|`` over ``x`` in
    ``[lo, hi]`` (arrays broadcast)."""
    w = np.asarray(w, dtype=np.int64)
    return (np.where(w < lo, lo - w, np.where(w > hi, w - hi, 0)),
            np.maximum(np.abs(lo - w), np.abs(hi - w)))


def _l1_range(weight2d: np.ndarray, lo: int, hi: int) -> tuple[int, int]:
    """Interval of ``-sum_k |x_k - w[o, k]|`` over ``x_k in [lo, hi]``, all rows ``o``."""
    w = _exact(weight2d)
    worst = np.maximum(np.abs(lo - w), np.abs(hi - w)).sum(axis=1)
    _fits(worst.max(initial=0))
    best = np.where(w < lo, lo - w, np.where(w > hi, w - hi, 0)).sum(axis=1)
    return int(-worst.max()), int(-best.min())


def _mac_range(weight2d: np.ndarray, lo: int, hi: int) -> tuple[int, int]:
    """Interval of ``sum_k x_k * w[o, k]`` over ``x_k in [lo, hi]``, all rows ``o``."""
    w = _exact(weight2d)
    _fits(_mag(w, lo, hi))
    a, b = w * lo, w * hi
    return int(np.minimum(a, b).sum(axis=1).min()), int(np.maximum(a, b).sum(axis=1).max())


def _matrix_range(arithmetic: str, weight: np.ndarray, lo: int, hi: int) -> tuple[int, int]:
    """Output interval of a conv or dense layer, its weight flattened to ``(O, K)``."""
    fn = {"l1": _l1_range, "mac": _mac_range}[arithmetic]
    return fn(weight.reshape(weight.shape[0], -1), lo, hi)


@dataclass
class _Conv(Layer):
    weight: np.ndarray = field(default=None, repr=False)  # (O, C, KH, KW)
    stride: int = 1
    padding: int = 0
    array_fields: ClassVar[tuple[str, ...]] = ("weight",)

    def __post_init__(self):
        self.weight = _int_array(f"{self.name}.weight", self.weight, 4)
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

    def out_range(self, lo, hi):
        return _matrix_range(self.arithmetic, self.weight, *self._range_in(lo, hi))

    def _range_in(self, lo, hi):
        # Zero padding feeds the value 0 into the receptive field.
        return (min(lo, 0), max(hi, 0)) if self.padding else (lo, hi)


@dataclass
class _Dense(Layer):
    weight: np.ndarray = field(default=None, repr=False)  # (O, K)
    array_fields: ClassVar[tuple[str, ...]] = ("weight",)

    def __post_init__(self):
        self.weight = _int_array(f"{self.name}.weight", self.weight, 2)

    def out_shape(self, in_shape):
        if len(in_shape) != 1:
            raise ModelError(f"{self.name}: expects a flat input, got shape {in_shape}; add a flatten layer")
        if in_shape[0] != self.weight.shape[1]:
            raise ModelError(f"{self.name}: weight takes {self.weight.shape[1]} inputs, input has {in_shape[0]}")
        return (self.weight.shape[0],)

    def out_range(self, lo, hi):
        return _matrix_range(self.arithmetic, self.weight, *self._range_in(lo, hi))

    def _range_in(self, lo, hi):
        return lo, hi


@register
@dataclass
class AdderConv2d(_Conv):
    """AdderNet convolution: ``y[o] = -sum_{c,ky,kx} |x[c, y+ky, x+kx] - w[o, c, ky, kx]|``."""

    kind: ClassVar[str] = "adder_conv2d"

    arithmetic: ClassVar[str] = "l1"


@register
@dataclass
class AdderDense(_Dense):
    """AdderNet fully connected layer: ``y[o] = -sum_k |x[k] - w[o, k]|``."""

    kind: ClassVar[str] = "adder_dense"

    arithmetic: ClassVar[str] = "l1"


@register
@dataclass
class Conv2d(_Conv):
    """Multiplier convolution (the baseline): ``y[o] = sum x * w``."""

    kind: ClassVar[str] = "conv2d"

    arithmetic: ClassVar[str] = "mac"


@register
@dataclass
class Dense(_Dense):
    """Multiplier fully connected layer (the baseline): ``y[o] = sum_k x[k] * w[o, k]``."""

    kind: ClassVar[str] = "dense"

    arithmetic: ClassVar[str] = "mac"


def _check_max_shift(name, max_shift) -> int:
    if isinstance(max_shift, bool) or not isinstance(max_shift, (int, np.integer)) or not 0 <= max_shift <= 30:
        raise ModelError(f"{name}: max_shift must be an integer in [0, 30], got {max_shift!r}")
    return int(max_shift)


def split_power_of_two(name: str, weight, ndim: int, max_shift: int) -> tuple[np.ndarray, np.ndarray]:
    """``(sign, shift)`` with ``weight == sign << shift``, or :class:`ModelError` naming the first bad entry.

    Every entry must be 0 or ``±2**p`` with ``0 <= p <= max_shift``; a zero weight gets shift 0.
    """
    max_shift = _check_max_shift(name, max_shift)
    w = _int_array(f"{name}.weight", weight, ndim)
    mag = np.abs(w)  # abs of the most negative int64 stays negative: refused below with the rest
    power = (mag > 0) & ((mag & (mag - 1)) == 0)
    ok = (w == 0) | (power & (mag <= (1 << max_shift)))
    if not ok.all():
        idx = tuple(int(v) for v in np.argwhere(~ok)[0])
        value = int(w[idx])
        hint = f"; raise max_shift to {abs(value).bit_length() - 1}" if power[idx] else ""
        raise ModelError(f"{name}: weight[{', '.join(map(str, idx))}] = {value} is not a signed power of two "
                         f"(0 or ±2**p, 0 <= p <= {max_shift}){hint}")
    shift = np.zeros(w.shape, dtype=np.int64)
    nz = w != 0
    shift[nz] = np.round(np.log2(mag[nz].astype(np.float64))).astype(np.int64)  # exact: powers <= 2**30
    return np.sign(w).astype(np.int64), shift


class _Shift:
    """Shared part of the shift layers: ``sign`` and ``shift`` arrays, the weight ``sign << shift``.

    ``weight`` is derived (not stored, not a constructor argument) so the shape logic and the
    multiplier reference apply unchanged.  ``max_shift`` bounds every shift (it sizes the
    hardware's barrel shifter); at most 30 so that ``x << shift`` stays far inside int64.
    A layer written by hand from a ``weight`` array goes through :meth:`from_weight`, which
    refuses any entry that is not 0 or a signed power of two in range.
    """

    _ndim: ClassVar[int] = 0

    @classmethod
    def from_weight(cls, name: str, weight, max_shift: int = 15, **params):
        """The layer whose integer weight is ``weight`` (every entry 0 or ``±2**p``, ``0 <= p <= max_shift``).

        ``params`` are the other fields (``stride``, ``padding`` for a conv).  Raises
        :class:`ModelError` naming the layer, the index and the value of the first entry that is
        not a signed power of two in range.
        """
        sign, shift = split_power_of_two(name, weight, cls._ndim, max_shift)
        return cls(name=name, sign=sign, shift=shift, max_shift=max_shift, **params)

    def _init_shift(self, ndim):
        self.sign = _int_array(f"{self.name}.sign", self.sign, ndim)
        self.shift = _int_array(f"{self.name}.shift", self.shift, ndim)
        if self.sign.shape != self.shift.shape:
            raise ModelError(f"{self.name}: sign has shape {self.sign.shape} but shift has {self.shift.shape}; "
                             f"they must be the same (the weight shape)")
        self.max_shift = _check_max_shift(self.name, self.max_shift)
        if self.sign.size and not np.isin(self.sign, (-1, 0, 1)).all():
            bad = self.sign[~np.isin(self.sign, (-1, 0, 1))].flat[0]
            raise ModelError(f"{self.name}: sign must be -1, 0 or 1, found {bad}")
        if self.shift.size and self.shift.min() < 0:
            raise ModelError(f"{self.name}: shift must be >= 0 (the integer weight is sign << shift), "
                             f"found {self.shift.min()}")
        if self.shift.size and self.shift.max() > self.max_shift:
            raise ModelError(f"{self.name}: shift {self.shift.max()} exceeds max_shift={self.max_shift}; "
                             f"raise max_shift or narrow the exponent range")
        self.weight = self.sign << self.shift

    def _shift_params(self):
        return {"max_shift": int(self.max_shift)}


@register
@dataclass
class ShiftConv2d(_Shift, _Conv):
    """DeepShift convolution: ``y[o] = sum_{c,ky,kx} sign * (x[c, y+ky, x+kx] << shift)``.

    The integer weight is ``sign << shift`` with ``sign`` in ``{-1, 0, 1}``, ``shift`` in
    ``[0, max_shift]``; arrays of shape ``(O, C, KH, KW)``.
    """

    kind: ClassVar[str] = "shift_conv2d"
    _ndim: ClassVar[int] = 4
    array_fields: ClassVar[tuple[str, ...]] = ("sign", "shift")
    weight: np.ndarray = field(default=None, init=False, repr=False)
    sign: np.ndarray = field(default=None, repr=False)
    shift: np.ndarray = field(default=None, repr=False)
    max_shift: int = 15

    def __post_init__(self):
        self._init_shift(4)
        super().__post_init__()

    def params(self):
        return {**super().params(), **self._shift_params()}

    arithmetic: ClassVar[str] = "mac"


@register
@dataclass
class ShiftDense(_Shift, _Dense):
    """DeepShift fully connected layer: ``y[o] = sum_k sign[o, k] * (x[k] << shift[o, k])``."""

    kind: ClassVar[str] = "shift_dense"
    _ndim: ClassVar[int] = 2
    array_fields: ClassVar[tuple[str, ...]] = ("sign", "shift")
    weight: np.ndarray = field(default=None, init=False, repr=False)
    sign: np.ndarray = field(default=None, repr=False)
    shift: np.ndarray = field(default=None, repr=False)
    max_shift: int = 15

    def __post_init__(self):
        self._init_shift(2)
        super().__post_init__()

    def params(self):
        return self._shift_params()

    arithmetic: ClassVar[str] = "mac"


def _small_matrix(name, value, shape) -> np.ndarray:
    arr = _int_array(name, value, 2)
    if arr.shape != shape:
        raise ModelError(f"{name}: expected shape {shape[0]}×{shape[1]}, got {arr.shape}")
    if np.abs(arr).max(initial=0) > 2:
        raise ModelError(f"{name}: entries must be 0, ±1 or ±2 (adders and one-bit shifts), "
                         f"found {int(arr.flat[np.argmax(np.abs(arr))])}")
    return arr


def _affine_range(coef: np.ndarray, lo, hi):
    """Interval of ``sum_k coef[..., k] * x_k`` with ``x_k in [lo[..., k], hi[..., k]]`` (broadcast)."""
    coef, lo, hi = _exact(coef), _exact(lo), _exact(hi)
    _fits(_mag(coef, lo, hi))
    a, b = coef * lo, coef * hi
    return np.minimum(a, b).sum(axis=-1), np.maximum(a, b).sum(axis=-1)


@register
@dataclass
class WinogradAdderConv2d(Layer):
    """Winograd-AdderNet 3×3 convolution F(2×2, 3×3), stride 1 (:mod:`hwgen.nn.winograd`).

    Per 4×4 input tile ``d`` (step 2) of every input channel ``c``: ``V[c] = bt · d · btᵀ``; per
    output channel ``o`` the 16 lanes ``M[o] = -sum_c |u[o, c] - V[c]|`` (element-wise over the
    4×4); the 2×2 output tile ``Y[o] = at · M[o] · atᵀ``.  ``u`` ``(O, C, 4, 4)`` is the kernel
    already transformed (``G`` is not needed at inference) on the scale of ``V``; ``bt`` (4×4) and
    ``at`` (2×4) are small integer matrices (entries 0, ±1, ±2: a set with ``½`` entries is stored
    doubled, the factor folded into the scales by the quantizer).  ``padding`` (0 or 1) zeros
    around the input; an odd output size is completed to whole tiles with zeros at the
    bottom/right and cropped (output ``H + 2·padding - 2``).

    Ranges (:meth:`v_range`, :meth:`lane_range`, :meth:`out_range`), by interval arithmetic stage
    by stage, each stage tight for its own inputs: the tile values lie in ``[min(lo, 0), max(hi,
    0)]`` (zeros of the padding and of the tile completion are always counted), ``V`` per lane
    through ``bt ⊗ bt`` (0/±1 entries, two non-zeros per row: up to four times ``d``, signed —
    an 8-bit unsigned input gives ``V`` in ``[-510, 1020]``, 11 bits signed),
    each lane ``|u - V|`` against the actual ``u``, the sum over the channels, then ``at ⊗ at``.
    """

    kind: ClassVar[str] = "winograd_adder_conv2d"
    array_fields: ClassVar[tuple[str, ...]] = ("u", "bt", "at")
    u: np.ndarray = field(default=None, repr=False)
    bt: np.ndarray = field(default=None, repr=False)
    at: np.ndarray = field(default=None, repr=False)
    padding: int = 1

    def __post_init__(self):
        self.u = _int_array(f"{self.name}.u", self.u, 4)
        if self.u.shape[2:] != (4, 4) or self.u.shape[0] < 1 or self.u.shape[1] < 1:
            raise ModelError(f"{self.name}.u: expected shape (O, C, 4, 4), got {self.u.shape}")
        self.bt = _small_matrix(f"{self.name}.bt", self.bt, (4, 4))
        self.at = _small_matrix(f"{self.name}.at", self.at, (2, 4))
        if isinstance(self.padding, bool) or self.padding not in (0, 1):
            raise ModelError(f"{self.name}: padding must be 0 or 1, got {self.padding!r}")
        self.padding = int(self.padding)

    @property
    def weight(self) -> np.ndarray:
        """``u``, for code that lists the weights of any layer."""
        return self.u

    def params(self):
        return {"padding": int(self.padding)}

    def tiles(self, h: int, w: int) -> tuple[int, int]:
        """Number of 2×2 output tiles (rows, columns) for an ``h × w`` input."""
        oh, ow = h + 2 * self.padding - 2, w + 2 * self.padding - 2
        return (oh + 1) // 2, (ow + 1) // 2

    def out_shape(self, in_shape):
        if len(in_shape) != 3:
            raise ModelError(f"{self.name}: expects a C×H×W input, got shape {in_shape}")
        c, h, w = in_shape
        if self.u.shape[1] != c:
            raise ModelError(f"{self.name}: u has {self.u.shape[1]} input channels, input has {c}")
        oh, ow = h + 2 * self.padding - 2, w + 2 * self.padding - 2
        if oh < 1 or ow < 1:
            raise ModelError(f"{self.name}: input {h}×{w} too small for a 3×3 kernel with padding {self.padding}")
        return (self.u.shape[0], oh, ow)

    def _range_in(self, lo, hi):
        return min(lo, 0), max(hi, 0)

    def v_range(self, lo, hi) -> tuple[np.ndarray, np.ndarray]:
        """Per lane ``(4, 4)`` interval of ``V = bt · d · btᵀ`` for inputs in ``[lo, hi]``."""
        lo, hi = self._range_in(lo, hi)
        coef = np.einsum("ik,jl->ijkl", self.bt, self.bt).reshape(4, 4, 16)
        return _affine_range(coef, lo, hi)

    def lane_range(self, lo, hi) -> tuple[np.ndarray, np.ndarray]:
        """Per output channel and lane ``(O, 4, 4)`` interval of ``M = -sum_c |u - V|``."""
        v_lo, v_hi = self.v_range(lo, hi)
        u = _exact(self.u)
        worst = np.maximum(np.abs(v_lo - u), np.abs(v_hi - u)).sum(axis=1)
        _fits(worst.max())
        best = np.where(u < v_lo, v_lo - u, np.where(u > v_hi, u - v_hi, 0)).sum(axis=1)
        return -worst, -best

    def out_range(self, lo, hi):
        m_lo, m_hi = self.lane_range(lo, hi)
        coef = np.einsum("ai,bj->abij", self.at, self.at).reshape(2, 2, 1, 16)
        y_lo, y_hi = _affine_range(coef, m_lo.reshape(1, 1, -1, 16), m_hi.reshape(1, 1, -1, 16))
        return int(y_lo.min()), int(y_hi.max())


@register
@dataclass
class Requant(Layer):
    """Per-channel requantization back to activation bits, by shift-and-add.

    ``y[c] = clamp((x[c] * mult[c] + bias[c]) >> shift, out_lo, out_hi)`` where ``>>`` is an
    arithmetic shift right (rounds toward minus infinity; round-to-nearest is folded into
    ``bias`` by the quantizer).  ``relu`` clamps to ``[0, 2**out_bits - 1]``; otherwise the
    output is signed ``out_bits`` wide.  ``mult`` has at most ``max_terms`` non-zero digits
    in canonical signed-digit form, so the hardware multiplies with that many shifters.
    ``scale`` is the real value of one output LSB (metadata, not used in integer arithmetic).
    ``clamp_lo`` / ``clamp_hi`` narrow the clamp inside that range (``None``: its end): ReLU6
    and Hardtanh are clamps at their bounds' codes.
    """

    kind: ClassVar[str] = "requant"
    array_fields: ClassVar[tuple[str, ...]] = ("mult", "bias")
    mult: np.ndarray = field(default=None, repr=False)
    bias: np.ndarray = field(default=None, repr=False)
    shift: int = 0
    out_bits: int = 8
    relu: bool = True
    scale: float = 1.0
    max_terms: int = 3
    clamp_lo: int | None = None
    clamp_hi: int | None = None

    def __post_init__(self):
        self.mult = _int_array(f"{self.name}.mult", self.mult, 1)
        self.bias = _int_array(f"{self.name}.bias", self.bias, 1)
        if self.mult.shape != self.bias.shape:
            raise ModelError(f"{self.name}: mult and bias must have the same length")
        if not 0 <= self.shift <= 62 or not 1 <= self.out_bits <= 32:
            raise ModelError(f"{self.name}: shift must be in [0, 62] and out_bits in [1, 32]")
        terms = max((len(csd(m)) for m in self.mult), default=0)
        if terms > self.max_terms:
            raise ModelError(f"{self.name}: a multiplier has {terms} signed digits, more than max_terms={self.max_terms}")
        lo, hi = self._range
        for key in ("clamp_lo", "clamp_hi"):
            v = getattr(self, key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer))
                                  or not lo <= v <= hi):
                raise ModelError(f"{self.name}: {key} must be an integer in [{lo}, {hi}] or None, "
                                 f"not {v!r}")
        if self.clamp[0] > self.clamp[1]:
            raise ModelError(f"{self.name}: clamp_lo {self.clamp[0]} above clamp_hi {self.clamp[1]}")

    @property
    def _range(self) -> tuple[int, int]:
        """The output codes of ``out_bits`` (unsigned with ``relu``)."""
        if self.relu:
            return 0, (1 << self.out_bits) - 1
        return -(1 << (self.out_bits - 1)), (1 << (self.out_bits - 1)) - 1

    @property
    def clamp(self) -> tuple[int, int]:
        lo, hi = self._range
        return (lo if self.clamp_lo is None else int(self.clamp_lo),
                hi if self.clamp_hi is None else int(self.clamp_hi))

    def params(self):
        out = {"shift": int(self.shift), "out_bits": int(self.out_bits), "relu": bool(self.relu),
               "scale": float(self.scale), "max_terms": int(self.max_terms)}
        for key in ("clamp_lo", "clamp_hi"):  # only when set: older models read the same
            if getattr(self, key) is not None:
                out[key] = int(getattr(self, key))
        return out

    def out_shape(self, in_shape):
        if in_shape[0] != len(self.mult):
            raise ModelError(f"{self.name}: {len(self.mult)} channels, input has {in_shape[0]}")
        return in_shape

    def sum_range(self, lo, hi) -> tuple[int, int]:
        """Interval of ``x * mult + bias`` before the shift (sizes the hardware's adder)."""
        m, b = _exact(self.mult), _exact(self.bias)
        _fits(*(np.abs(m) * max(abs(lo), abs(hi)) + np.abs(b)))
        a, c = m * lo + b, m * hi + b
        return int(np.minimum(a, c).min()), int(np.maximum(a, c).max())

    def out_range(self, lo, hi):
        s_lo, s_hi = self.sum_range(lo, hi)
        c_lo, c_hi = self.clamp
        return max(c_lo, min(c_hi, s_lo >> self.shift)), max(c_lo, min(c_hi, s_hi >> self.shift))


def _pool_geometry(layer) -> None:
    """Validate (and default) a pool's ``size``, ``stride`` (``None``: ``size``) and ``padding``
    (at most half the window, PyTorch's rule)."""
    if layer.stride is None:
        layer.stride = layer.size
    for key, least in (("size", 1), ("stride", 1), ("padding", 0)):
        v = getattr(layer, key)
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < least:
            raise ModelError(f"{layer.name}: {key} must be an integer >= {least}, not {v!r}")
        setattr(layer, key, int(v))
    if 2 * layer.padding > layer.size:
        raise ModelError(f"{layer.name}: padding {layer.padding} is more than half the pool size "
                         f"{layer.size}")


def _pool_params(layer) -> dict:
    """A pool's JSON fields; ``stride`` and ``padding`` only when not the defaults, so a model
    of the plain ``size``-stride pools reads as before."""
    out = {"size": int(layer.size)}
    if layer.stride != layer.size:
        out["stride"] = int(layer.stride)
    if layer.padding:
        out["padding"] = int(layer.padding)
    return out


def _pool_shape(layer, in_shape) -> tuple[int, int, int]:
    if len(in_shape) != 3:
        raise ModelError(f"{layer.name}: expects a C×H×W input, got shape {in_shape}")
    c, h, w = in_shape
    k, s, p = layer.size, layer.stride, layer.padding
    if h + 2 * p < k or w + 2 * p < k:
        raise ModelError(f"{layer.name}: input {h}×{w} smaller than the pool size {k}")
    return (c, (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1)


@dataclass
class _Pool2d(Layer):
    """A pool over ``size``×``size`` windows, stride ``stride`` (default ``size``), ``padding``
    on every side (at most half the window), floor mode."""

    size: int = 2
    stride: int | None = None
    padding: int = 0

    def __post_init__(self):
        _pool_geometry(self)

    def params(self):
        return _pool_params(self)

    def out_shape(self, in_shape):
        return _pool_shape(self, in_shape)


@register
@dataclass
class MaxPool2d(_Pool2d):
    """Max pooling (see :class:`_Pool2d`); a padded position never wins (PyTorch pads with
    minus infinity)."""

    kind: ClassVar[str] = "maxpool2d"

    def out_range(self, lo, hi):
        return lo, hi


@register
@dataclass
class SumPool2d(_Pool2d):
    """Sum over the windows of :class:`_Pool2d`, zero padding: average pooling without its
    divider (``count_include_pad``), whose ``1 / size²`` the quantizer puts into the scale of
    the next layer's input."""

    kind: ClassVar[str] = "sumpool2d"

    def out_range(self, lo, hi):
        # Every partial sum of a window's taps lies in it (a padded tap adds 0): the
        # accumulator's width too.
        n = self.size * self.size
        return n * min(lo, 0), n * max(hi, 0)


@register
@dataclass
class GlobalSumPool2d(Layer):
    """Sum over the whole ``height``×``width`` map of each channel, to ``C×1×1``: global average
    pooling without its divider (see :class:`SumPool2d`)."""

    kind: ClassVar[str] = "global_sumpool2d"
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
        n = self.height * self.width
        return n * min(lo, 0), n * max(hi, 0)


@register
@dataclass
class Flatten(Layer):
    """C×H×W to a flat vector in PyTorch's (channel-major) order."""

    kind: ClassVar[str] = "flatten"

    def out_shape(self, in_shape):
        return (int(np.prod(in_shape)),)

    def out_range(self, lo, hi):
        return lo, hi


# --------------------------------------------------------------------------- model

@dataclass
class Model:
    """An integer model: input description plus a list of layers.

    The input is unsigned, ``input_bits`` wide; ``input_scale`` is the real value of one
    input LSB (the host quantizes ``round(x / input_scale)`` before streaming).
    The model's output is the last layer's output; ``argmax`` of it is the class.
    """

    name: str
    input_shape: tuple[int, int, int]
    input_bits: int
    input_scale: float
    layers: list[Layer]
    classes: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.input_shape = tuple(int(v) for v in self.input_shape)
        self.validate()

    def validate(self) -> None:
        if len(self.input_shape) != 3 or min(self.input_shape) < 1:
            raise ModelError(f"input_shape must be C×H×W with positive sizes, got {self.input_shape}")
        if not 1 <= self.input_bits <= 16:
            raise ModelError(f"input_bits must be in [1, 16], got {self.input_bits}")
        if not self.layers:
            raise ModelError("the model has no layers")
        names = [layer.name for layer in self.layers]
        if len(set(names)) != len(names):
            raise ModelError("layer names must be unique")
        shapes = self.shapes()  # raises on inconsistent shapes
        if len(shapes[-1]) != 1:
            raise ModelError(f"the last layer must give a flat vector of class scores, got shape {shapes[-1]}")
        if self.classes and len(self.classes) != shapes[-1][0]:
            raise ModelError(f"{len(self.classes)} class names for {shapes[-1][0]} outputs")

    @property
    def input_range(self) -> tuple[int, int]:
        return 0, (1 << self.input_bits) - 1

    def shapes(self) -> list[tuple[int, ...]]:
        """Output shape of every layer (excluding the batch dimension)."""
        shape, out = self.input_shape, []
        for layer in self.layers:
            shape = tuple(int(v) for v in layer.out_shape(shape))
            out.append(shape)
        return out

    def in_shapes(self) -> list[tuple[int, ...]]:
        return [self.input_shape] + self.shapes()[:-1]

    def value_ranges(self) -> list[tuple[int, int]]:
        """Exact worst-case output interval of every layer, for any input in range."""
        lo, hi = self.input_range
        out = []
        for layer in self.layers:
            try:
                lo, hi = layer.out_range(lo, hi)
                _fits(lo, hi)
            except OverflowError as e:
                raise ModelError(f"{layer.name}: a derived value ({e}) does not fit int64; "
                                 "the golden model would wrap") from None
            out.append((int(lo), int(hi)))
        return out

    def in_ranges(self) -> list[tuple[int, int]]:
        return [self.input_range] + self.value_ranges()[:-1]

    @property
    def num_classes(self) -> int:
        return self.shapes()[-1][0]

    # ------------------------------------------------------------------ save / load

    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "name": self.name,
            "input_shape": list(self.input_shape),
            "input_bits": int(self.input_bits),
            "input_scale": float(self.input_scale),
            "classes": list(self.classes),
            "meta": self.meta,
            "layers": [layer.to_json() for layer in self.layers],
        }

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``model.json`` and ``model.npz`` into ``directory``, atomically each."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        arrays = {}
        for i, layer in enumerate(self.layers):
            for key, arr in layer.arrays().items():
                arrays[f"{i}.{key}"] = np.asarray(arr, dtype=np.int64)
        atomic_write(directory / "model.npz", lambda f: np.savez(f, **arrays), binary=True)
        text = json.dumps(self.to_json(), indent=2) + "\n"
        atomic_write(directory / "model.json", lambda f: f.write(text))
        return directory / "model.json"

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Model":
        """Load from a directory holding ``model.json`` + ``model.npz``, or from the JSON path."""
        path = Path(path)
        manifest = path / "model.json" if path.is_dir() else path
        if not manifest.is_file():
            raise ModelError(f"no integer model at {path} (expected model.json and model.npz)")
        try:
            doc = json.loads(manifest.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ModelError(f"{manifest}: not valid JSON ({e})") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ModelError(f"{manifest}: not an hwgen integer model")
        if doc.get("version") != FORMAT_VERSION:
            raise ModelError(f"{manifest}: format version {doc.get('version')}, this hwgen reads {FORMAT_VERSION}")
        npz = manifest.with_suffix(".npz")
        try:
            with np.load(npz, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except FileNotFoundError:
            raise ModelError(f"{npz}: missing (the arrays of {manifest})") from None
        except (ValueError, OSError) as e:
            raise ModelError(f"{npz}: not a readable NumPy archive ({e})") from None
        return cls.from_json(doc, arrays)

    @classmethod
    def from_json(cls, doc: dict, arrays: dict[str, np.ndarray]) -> "Model":
        try:
            layers = []
            for i, spec in enumerate(doc["layers"]):
                spec = dict(spec)
                kind = spec.pop("kind")
                if kind not in _KINDS:
                    raise ModelError(f"layer {i}: kind {kind!r} is not supported "
                                     f"(supported: {', '.join(sorted(_KINDS))})")
                layer_cls = _KINDS[kind]
                if issubclass(layer_cls, _Shift) and f"{i}.weight" in arrays:
                    # A hand-written shift layer may give its integer weight instead of sign and shift.
                    given = [k for k in layer_cls.array_fields if f"{i}.{k}" in arrays]
                    if given:
                        raise ModelError(f"layer {i} ({kind}): the .npz gives both 'weight' and {given[0]!r}; "
                                         f"give either 'weight' or 'sign' and 'shift'")
                    layers.append(layer_cls.from_weight(weight=arrays[f"{i}.weight"], **spec))
                    continue
                for key in layer_cls.array_fields:
                    if f"{i}.{key}" not in arrays:
                        alt = " (or give 'weight')" if issubclass(layer_cls, _Shift) else ""
                        raise ModelError(f"layer {i} ({kind}): array {key!r} missing from the .npz{alt}")
                    spec[key] = arrays[f"{i}.{key}"]
                layers.append(layer_cls(**spec))
            return cls(name=doc["name"], input_shape=tuple(doc["input_shape"]),
                       input_bits=int(doc["input_bits"]), input_scale=float(doc["input_scale"]),
                       layers=layers, classes=list(doc.get("classes", [])), meta=dict(doc.get("meta", {})))
        except ModelError:
            raise
        except (KeyError, TypeError) as e:
            raise ModelError(f"malformed integer model: {type(e).__name__} {e}") from None


def layer_kinds() -> list[str]:
    return sorted(_KINDS)

