"""Integer arithmetic shared by the IR, the golden model and the hardware: bit widths,
canonical signed digits, and the exact interval rules every layer kind derives its ranges from.

Plain NumPy and Python integers; it imports nothing from hwgen, so the hardware generator can
size its datapaths from here without loading the layer kinds.  Interval rules compute on Python
integers (``dtype=object``), so a derivation cannot wrap; a bound outside int64 raises
:class:`OverflowError` (the model adds the layer's name).
"""

from __future__ import annotations

import enum

import numpy as np

__all__ = ["Arithmetic", "INT64_MAX", "bits_for", "signed_bits_for", "csd", "csd_round",
           "abs_diff_range", "l1_range", "mac_range", "affine_range", "exact", "fits"]

INT64_MAX = (1 << 63) - 1


class Arithmetic(str, enum.Enum):
    """What one weight tap computes: the one vocabulary of the IR, the quantizer and the lanes.

    ``L1``: ``-|x - w|`` summed (AdderNet, the Winograd lanes); ``SHIFT``: ``sign * (x << p)``
    summed (DeepShift); ``MAC``: ``x * w`` summed (the multiplier baseline).  The value is the
    hardware lane's name (:class:`hwgen.hw.pe.Lane`)."""

    L1 = "l1"
    SHIFT = "shift"
    MAC = "mac"


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
    """The integer nearest to ``value`` whose canonical signed-digit form has at most
    ``max_terms`` digits.

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


# --------------------------------------------------------------------------- interval rules

def exact(value) -> np.ndarray:
    """``value`` as an array of Python integers: range derivations on it cannot wrap."""
    return np.asarray(value).astype(object)


def fits(*bounds) -> None:
    """Raise ``OverflowError`` unless every bound is inside int64."""
    for b in bounds:
        if not -INT64_MAX - 1 <= int(b) <= INT64_MAX:
            raise OverflowError(int(b))


def _mag(coef, lo, hi):
    """Bound of every partial sum of ``sum_k coef[..., k] * x_k``, ``|x_k| <= max(|lo|, |hi|)``."""
    bound = np.maximum(np.abs(exact(lo)), np.abs(exact(hi)))
    return np.asarray((np.abs(coef) * bound).sum(axis=-1)).max()


def abs_diff_range(w, lo, hi) -> tuple[np.ndarray, np.ndarray]:
    """The one l1 range rule: elementwise interval ``(min, max)`` of ``|x - w|`` over ``x`` in
    ``[lo, hi]`` (arrays broadcast; exact when ``w``, ``lo``, ``hi`` are Python integers)."""
    if not (isinstance(w, np.ndarray) and w.dtype == object):
        w = np.asarray(w, dtype=np.int64)
    return (np.where(w < lo, lo - w, np.where(w > hi, w - hi, 0)),
            np.maximum(np.abs(lo - w), np.abs(hi - w)))


def l1_range(weight2d: np.ndarray, lo, hi) -> tuple[int, int]:
    """Interval of ``-sum_k |x_k - w[o, k]|`` over ``x_k in [lo, hi]``, all rows ``o``."""
    best, worst = abs_diff_range(exact(weight2d), lo, hi)
    worst = worst.sum(axis=1)
    fits(worst.max(initial=0))
    return int(-worst.max()), int(-best.sum(axis=1).min())


def mac_range(weight2d: np.ndarray, lo, hi) -> tuple[int, int]:
    """Interval of ``sum_k x_k * w[o, k]`` over ``x_k in [lo, hi]``, all rows ``o``."""
    w = exact(weight2d)
    fits(_mag(w, lo, hi))
    a, b = w * lo, w * hi
    return int(np.minimum(a, b).sum(axis=1).min()), int(np.maximum(a, b).sum(axis=1).max())


def affine_range(coef: np.ndarray, lo, hi):
    """Interval of ``sum_k coef[..., k] * x_k`` with ``x_k in [lo[..., k], hi[..., k]]``
    (broadcast), as arrays of Python integers."""
    coef, lo, hi = exact(coef), exact(lo), exact(hi)
    fits(_mag(coef, lo, hi))
    a, b = coef * lo, coef * hi
    return np.minimum(a, b).sum(axis=-1), np.maximum(a, b).sum(axis=-1)
