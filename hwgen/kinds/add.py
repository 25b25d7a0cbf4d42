"""Residual addition, saturating: the kind ``add``, ``y = clamp(a + b)`` of two tensors of one
shape.  Golden model and ranges only: no engine and no quantizer handler yet (issue 15)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .base import Layer, ModelError, Op, register, swidth

__all__ = ["Add"]


@register
@dataclass
class Add(Layer):
    """``y = clamp(a + b, lo, hi)`` elementwise, ``a`` and ``b`` the two tensors it reads (one
    shape): ``[0, 2**out_bits - 1]`` if not ``signed``, else signed ``out_bits`` wide."""

    kind: ClassVar[str] = "add"
    label: ClassVar[str] = "residual add"
    arity: ClassVar[int] = 2
    out_bits: int = 8
    signed: bool = False

    def __post_init__(self):
        if isinstance(self.out_bits, bool) or not 1 <= int(self.out_bits) <= 32:
            raise ModelError(f"{self.name}: out_bits must be in [1, 32], got {self.out_bits!r}")

    @property
    def clamp(self) -> tuple[int, int]:
        if self.signed:
            return -(1 << (self.out_bits - 1)), (1 << (self.out_bits - 1)) - 1
        return 0, (1 << self.out_bits) - 1

    def params(self):
        return {"out_bits": int(self.out_bits), "signed": bool(self.signed)}

    def shape_of(self, in_shapes):
        a, b = in_shapes
        if a != b:
            raise ModelError(f"{self.name}: adds tensors of shapes {a} and {b}; they must match")
        return a

    def range_of(self, in_ranges):
        (a_lo, a_hi), (b_lo, b_hi) = in_ranges
        c_lo, c_hi = self.clamp
        return max(c_lo, min(c_hi, a_lo + b_lo)), max(c_lo, min(c_hi, a_hi + b_hi))

    def run(self, xs):
        a, b = xs
        return np.clip(a + b, *self.clamp)

    def ops_of(self, in_shapes, out_shape, in_ranges, out_range):
        """One add per element at the sum's width, two compares (the clamp)."""
        (a_lo, a_hi), (b_lo, b_hi) = in_ranges
        n = int(np.prod(out_shape))
        bits = swidth(a_lo + b_lo, a_hi + b_hi)
        return [Op("add", bits, n), Op("compare", bits, 2 * n)]
