"""Requantization back to activation bits, by shift-and-add: the kind ``requant``.

The quantizer makes one after every weight layer (BatchNorm folded, ReLU fused), so it has no
PyTorch module of its own.

Rounding.  The only right shift of the integer model is this one: ``>>`` on int64, an
arithmetic shift right, which rounds toward minus infinity (floor) for negative numbers too:
``-5 >> 1 == -3``, ``-1 >> 4 == -1`` (not toward zero, as ``int(-5 / 2) == -2`` would).  That
is exactly the hardware's arithmetic shift right of a two's-complement number (Verilog ``>>>``
on a signed value, Amaranth ``>>`` on a signed ``Value``), so the two agree bit for bit; the
quantizer makes this round-to-nearest by adding ``1 << (shift - 1)`` into the bias.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from ..arith import csd, exact, fits
from .base import Layer, ModelError, Op, int_array, register, swidth, width

__all__ = ["Requant", "requant"]


def requant(layer: "Requant", x: np.ndarray) -> np.ndarray:
    """``clamp((x * mult + bias) >> shift)`` per channel (axis 1) in int64."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    s = x.astype(np.int64) * layer.mult.reshape(shape) + layer.bias.reshape(shape)
    return np.clip(s >> layer.shift, *layer.clamp)


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
    label: ClassVar[str] = "requantize"
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
        self.mult = int_array(f"{self.name}.mult", self.mult, 1)
        self.bias = int_array(f"{self.name}.bias", self.bias, 1)
        if self.mult.shape != self.bias.shape:
            raise ModelError(f"{self.name}: mult and bias must have the same length")
        if not 0 <= self.shift <= 62 or not 1 <= self.out_bits <= 32:
            raise ModelError(f"{self.name}: shift must be in [0, 62] and out_bits in [1, 32]")
        terms = max((len(csd(m)) for m in self.mult), default=0)
        if terms > self.max_terms:
            raise ModelError(f"{self.name}: a multiplier has {terms} signed digits, more than "
                             f"max_terms={self.max_terms}")
        lo, hi = self.code_range
        for key in ("clamp_lo", "clamp_hi"):
            v = getattr(self, key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer))
                                  or not lo <= v <= hi):
                raise ModelError(f"{self.name}: {key} must be an integer in [{lo}, {hi}] or None, "
                                 f"not {v!r}")
        if self.clamp[0] > self.clamp[1]:
            raise ModelError(f"{self.name}: clamp_lo {self.clamp[0]} above clamp_hi {self.clamp[1]}")

    @property
    def code_range(self) -> tuple[int, int]:
        """The output codes of ``out_bits`` (unsigned with ``relu``)."""
        if self.relu:
            return 0, (1 << self.out_bits) - 1
        return -(1 << (self.out_bits - 1)), (1 << (self.out_bits - 1)) - 1

    @property
    def clamp(self) -> tuple[int, int]:
        lo, hi = self.code_range
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
        m, b = exact(self.mult), exact(self.bias)
        fits(*(np.abs(m) * max(abs(lo), abs(hi)) + np.abs(b)))
        a, c = m * lo + b, m * hi + b
        return int(np.minimum(a, c).min()), int(np.maximum(a, c).max())

    def out_range(self, lo, hi):
        s_lo, s_hi = self.sum_range(lo, hi)
        c_lo, c_hi = self.clamp
        return (max(c_lo, min(c_hi, s_lo >> self.shift)),
                max(c_lo, min(c_hi, s_hi >> self.shift)))

    def execute(self, x):
        return requant(self, x)

    def ops(self, in_shape, out_shape, in_range, out_range):
        """Per element of channel ``c``: one shift per canonical-signed-digit term of
        ``mult[c]`` with a non-zero power, ``terms`` adds (the terms and the bias), one shift
        right by ``shift`` (if non-zero), two compares (the clamp)."""
        per_channel = int(np.prod(in_shape[1:])) if len(in_shape) > 1 else 1
        in_bits = width(*in_range)
        sum_bits = swidth(*self.sum_range(*in_range))
        shifts = adds = 0
        for m in self.mult:
            digits = csd(int(m))
            shifts += sum(1 for _, p in digits if p > 0)
            adds += len(digits)  # terms - 1 to combine them, + 1 for the bias
        elements = per_channel * len(self.mult)
        ops = [Op("shift", in_bits, shifts * per_channel), Op("add", sum_bits, adds * per_channel)]
        if self.shift:
            ops.append(Op("shift", sum_bits, elements))
        ops.append(Op("compare", sum_bits, 2 * elements))
        return [op for op in ops if op.count]
