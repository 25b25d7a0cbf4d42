"""Winograd-AdderNet 3×3 convolution F(2×2, 3×3): ``Y = Aᵀ(-|U - BᵀdB|)A`` per tile.

The kind ``winograd_adder_conv2d``; from ``hwgen.nn.WinogradAdderConv2d`` at ``p = 1``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..arith import Arithmetic, abs_diff_range, affine_range, exact, fits
from .adder import AdderConv2d
from .base import (BLOCK_ELEMENTS, OP_TYPES, Layer, ModelError, Op, Quantizer, QuantizedLayer,
                   int_array, register, swidth)

__all__ = ["WinogradAdderConv2d", "winograd_adder"]


def winograd_adder(x: np.ndarray, u: np.ndarray, bt: np.ndarray, at: np.ndarray,
                   padding: int) -> np.ndarray:
    """Winograd-AdderNet F(2×2, 3×3): ``(N, C, H, W)`` → ``(N, O, H + 2·padding - 2,
    W + 2·padding - 2)``.

    Per 4×4 tile ``d`` (step 2) and input channel: ``V = bt d btᵀ``; lanes ``M[o] = -sum_c
    |u[o, c] - V[c]|``; output tile ``at M[o] atᵀ``.  Odd output sizes: the input is completed
    to whole tiles with zeros at the bottom/right and the output cropped.  Dtype-generic:
    integer inputs run in exact int64 (the golden model), float inputs in float64 (to check the
    formula against a float reference).
    """
    integer = np.asarray(x).dtype.kind in "biu" and np.asarray(u).dtype.kind in "biu"
    dtype = np.int64 if integer else np.float64
    x, u = np.asarray(x).astype(dtype), np.asarray(u).astype(dtype)
    bt, at = np.asarray(bt).astype(dtype), np.asarray(at).astype(dtype)
    n, c, h, w = x.shape
    o = u.shape[0]
    oh, ow = h + 2 * padding - 2, w + 2 * padding - 2
    th, tw = (oh + 1) // 2, (ow + 1) // 2
    x = np.pad(x, ((0, 0), (0, 0), (padding, 2 * th + 2 - h - padding),
                   (padding, 2 * tw + 2 - w - padding)))
    d = sliding_window_view(x, (4, 4), axis=(2, 3))[:, :, ::2, ::2]    # (N, C, TH, TW, 4, 4)
    v = np.einsum("ik,nctwkl,jl->ntwcij", bt, d, bt)                   # (N, TH, TW, C, 4, 4)
    v = v.reshape(-1, c, 16)
    uf = u.reshape(o, c, 16)
    m = np.empty((v.shape[0], o, 16), dtype=dtype)
    rows = max(1, BLOCK_ELEMENTS // max(1, uf.size))
    for start in range(0, v.shape[0], rows):
        block = v[start:start + rows]
        m[start:start + rows] = -np.abs(block[:, None] - uf[None]).sum(axis=2)
    m = m.reshape(n, th, tw, o, 4, 4)
    y = np.einsum("ai,ntwoij,bj->notawb", at, m, at).reshape(n, o, 2 * th, 2 * tw)
    return y[:, :, :oh, :ow]


def _small_matrix(name, value, shape) -> np.ndarray:
    arr = int_array(name, value, 2)
    if arr.shape != shape:
        raise ModelError(f"{name}: expected shape {shape[0]}×{shape[1]}, got {arr.shape}")
    if np.abs(arr).max(initial=0) > 2:
        raise ModelError(f"{name}: entries must be 0, ±1 or ±2 (adders and one-bit shifts), "
                         f"found {int(arr.flat[np.argmax(np.abs(arr))])}")
    return arr


def _transform_adds(mat: np.ndarray, columns: int) -> tuple[int, int]:
    """``(adds, shifts)`` of ``mat @ X`` for an ``X`` with ``columns`` columns: per row, one add
    fewer than its non-zeros; a ``±2`` entry is one shift (the doubled ``½`` of a stored
    transform)."""
    nz = (mat != 0).sum(axis=1)
    adds = int(np.maximum(nz - 1, 0).sum()) * columns
    shifts = int((np.abs(mat) == 2).sum()) * columns
    return adds, shifts


@register
@dataclass
class WinogradAdderConv2d(Layer):
    """Winograd-AdderNet 3×3 convolution F(2×2, 3×3), stride 1 (:mod:`hwgen.nn.winograd`).

    Per 4×4 input tile ``d`` (step 2) of every input channel ``c``: ``V[c] = bt · d · btᵀ``; per
    output channel ``o`` the 16 lanes ``M[o] = -sum_c |u[o, c] - V[c]|`` (element-wise over the
    4×4); the 2×2 output tile ``Y[o] = at · M[o] · atᵀ``.  ``u`` ``(O, C, 4, 4)`` is the kernel
    already transformed (``G`` is not needed at inference) on the scale of ``V``; ``bt`` (4×4)
    and ``at`` (2×4) are small integer matrices (entries 0, ±1, ±2: a set with ``½`` entries is
    stored doubled, the factor folded into the scales by the quantizer).  ``padding`` (0 or 1)
    zeros around the input; an odd output size is completed to whole tiles with zeros at the
    bottom/right and cropped (output ``H + 2·padding - 2``).

    Ranges (:meth:`v_range`, :meth:`lane_range`, :meth:`out_range`), by interval arithmetic
    stage by stage, each stage tight for its own inputs: the tile values lie in ``[min(lo, 0),
    max(hi, 0)]`` (zeros of the padding and of the tile completion are always counted), ``V``
    per lane through ``bt ⊗ bt`` (0/±1 entries, two non-zeros per row: up to four times ``d``,
    signed — an 8-bit unsigned input gives ``V`` in ``[-510, 1020]``, 11 bits signed),
    each lane ``|u - V|`` against the actual ``u``, the sum over the channels, then ``at ⊗ at``.
    """

    kind: ClassVar[str] = "winograd_adder_conv2d"
    label: ClassVar[str] = "Winograd-AdderNet conv"
    arithmetic: ClassVar[Arithmetic] = Arithmetic.L1
    direct_form: ClassVar[type[Layer]] = AdderConv2d
    array_fields: ClassVar[tuple[str, ...]] = ("u", "bt", "at")
    u: np.ndarray = field(default=None, repr=False)
    bt: np.ndarray = field(default=None, repr=False)
    at: np.ndarray = field(default=None, repr=False)
    padding: int = 1

    def __post_init__(self):
        self.u = int_array(f"{self.name}.u", self.u, 4)
        if self.u.shape[2:] != (4, 4) or self.u.shape[0] < 1 or self.u.shape[1] < 1:
            raise ModelError(f"{self.name}.u: expected shape (O, C, 4, 4), got {self.u.shape}")
        self.bt = _small_matrix(f"{self.name}.bt", self.bt, (4, 4))
        self.at = _small_matrix(f"{self.name}.at", self.at, (2, 4))
        if isinstance(self.padding, bool) or self.padding not in (0, 1):
            raise ModelError(f"{self.name}: padding must be 0 or 1, got {self.padding!r}")
        self.padding = int(self.padding)

    @classmethod
    def random(cls, rng, name, shape, **params):
        """Random ``u`` ``(O, C, 4, 4)`` in [-600, 900) for a direct ``shape`` ``(O, C, 3, 3)``:
        inside the ``V`` range of 8-bit input tiles, [-510, 1020], as most trained ``u`` are;
        ``params`` give ``bt``, ``at`` and ``padding``."""
        return cls(name, u=rng.integers(-600, 900, size=(*shape[:2], 4, 4)), **params)

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
            raise ModelError(f"{self.name}: u has {self.u.shape[1]} input channels, "
                             f"input has {c}")
        oh, ow = h + 2 * self.padding - 2, w + 2 * self.padding - 2
        if oh < 1 or ow < 1:
            raise ModelError(f"{self.name}: input {h}×{w} too small for a 3×3 kernel with "
                             f"padding {self.padding}")
        return (self.u.shape[0], oh, ow)

    def _range_in(self, lo, hi):
        return min(lo, 0), max(hi, 0)

    def v_range(self, lo, hi) -> tuple[np.ndarray, np.ndarray]:
        """Per lane ``(4, 4)`` interval of ``V = bt · d · btᵀ`` for inputs in ``[lo, hi]``."""
        lo, hi = self._range_in(lo, hi)
        coef = np.einsum("ik,jl->ijkl", self.bt, self.bt).reshape(4, 4, 16)
        return affine_range(coef, lo, hi)

    def lane_range(self, lo, hi) -> tuple[np.ndarray, np.ndarray]:
        """Per output channel and lane ``(O, 4, 4)`` interval of ``M = -sum_c |u - V|``."""
        v_lo, v_hi = self.v_range(lo, hi)
        best, worst = abs_diff_range(exact(self.u), v_lo, v_hi)
        worst = worst.sum(axis=1)
        fits(worst.max())
        return -worst, -best.sum(axis=1)

    def out_range(self, lo, hi):
        m_lo, m_hi = self.lane_range(lo, hi)
        coef = np.einsum("ai,bj->abij", self.at, self.at).reshape(2, 2, 1, 16)
        y_lo, y_hi = affine_range(coef, m_lo.reshape(1, 1, -1, 16),
                                  m_hi.reshape(1, 1, -1, 16))
        return int(y_lo.min()), int(y_hi.max())

    def execute(self, x):
        return winograd_adder(x, self.u, self.bt, self.at, self.padding)

    def ops(self, in_shape, out_shape, in_range, out_range) -> list[Op]:
        """Per inference, with ``T`` tiles, ``C`` input and ``O`` output channels:

        * input transform ``bt · d · btᵀ`` per (tile, input channel): the adds of ``bt @ d``
          (4 columns) and of ``(·) @ btᵀ`` (4 rows), at the width of ``V`` (32 for the 0/±1
          sets);
        * ``16·T·C·O`` absdiff at the width of ``u - V`` (the l1 lanes);
        * ``16·T·O·(C-1)`` accumulating adds at the lane width (the sum over input channels);
        * output transform ``at · M · atᵀ`` per (tile, output channel), at the output width
          (24 adds for the 0/±1 sets).

        The direct form of the same layer (:meth:`direct_ops`) does ``9C`` absdiff and
        ``9C - 1`` adds per output pixel and channel: 36·C absdiff per 2×2 outputs against
        16·C here.
        """
        c, h, w = in_shape
        o = out_shape[0]
        th, tw = self.tiles(h, w)
        tiles = th * tw
        v_lo, v_hi = self.v_range(*in_range)
        v_bits = swidth(int(v_lo.min()), int(v_hi.max()))
        m_lo, m_hi = self.lane_range(*in_range)
        u = self.u
        diff_bits = swidth(int(v_lo.min()) - int(u.max()), int(v_hi.max()) - int(u.min()))
        lane_bits = swidth(int(m_lo.min()), int(m_hi.max()))
        out_bits = swidth(*out_range)
        a1, s1 = _transform_adds(self.bt, 4)   # bt @ d
        a2, s2 = _transform_adds(self.bt, 4)   # (bt @ d) @ btᵀ: the same matrix on the rows
        b1, t1 = _transform_adds(self.at, 4)   # at @ M (2×4 result)
        b2, t2 = _transform_adds(self.at, 2)   # (at @ M) @ atᵀ (2×2 result)
        ops = [Op("add", v_bits, tiles * c * (a1 + a2)),
               Op("shift", v_bits, tiles * c * (s1 + s2)),
               Op("absdiff", diff_bits, 16 * tiles * c * o),
               Op("add", lane_bits, 16 * tiles * o * (c - 1)),
               Op("add", out_bits, tiles * o * (b1 + b2)),
               Op("shift", out_bits, tiles * o * (t1 + t2))]
        return [op for op in ops if op.count]

    def direct_ops(self, in_shape, out_shape):
        """The direct AdderNet form (3×3 kernel, same padding and shapes): per output pixel and
        channel ``9C`` absdiff and ``9C - 1`` adds."""
        c = in_shape[0]
        o, oh, ow = out_shape
        direct = {t: 0 for t in OP_TYPES}
        direct["absdiff"] = oh * ow * o * 9 * c
        direct["add"] = oh * ow * o * (9 * c - 1)
        return direct


# --------------------------------------------------------------------------- quantizer

def winograd_weights(module, s_in: float):
    """Integer Winograd layer parts: ``(u, bt, at, acc_scale_factor)``.

    ``bt``/``at`` are the float ``Bᵀ``/``Aᵀ`` times ``kb``/``ka`` (2 if the matrix has a ``½``
    entry, else 1), so ``V_int = bt d_int btᵀ`` is ``V / (s_in / kb²)`` and ``u = round(U kb² /
    s_in)`` is on the same scale (the adder rule).  ``u`` is not clipped: its width is its own
    (the ranges of :class:`WinogradAdderConv2d` follow it).  Clipping, as the direct adder
    layers do, is not exact here: a clipped entry changes ``|u - V|`` by a constant (``V``
    stays on one side), but ``at · atᵀ`` turns the constants of the 16 lanes into a different
    constant for each of the four positions of an output tile, while the requantizer's bias is
    one per channel.  And trained ``U`` goes far beyond the range of ``V`` (on digits, a quarter
    of the first layer's entries lie outside their lane's range, down to about 9 × the input's
    full scale: such a lane is the linear function ``V - U`` of its input), so clipping to
    ``V``'s width costs accuracy (measured: 94.7 % integer against 98.1 % float) where keeping
    ``u`` exact costs about three bits of lane width.  One accumulator LSB is worth
    ``s_in / (kb² ka²)``.
    """
    bt_f = module.bt.double().numpy()
    at_f = module.at.double().numpy()
    kb = 2 if np.any(np.abs(bt_f) == 0.5) else 1
    ka = 2 if np.any(np.abs(at_f) == 0.5) else 1
    bt = np.round(bt_f * kb).astype(np.int64)
    at = np.round(at_f * ka).astype(np.int64)
    u = np.round(module.weight.detach().double().numpy() * kb * kb / s_in)
    if np.abs(u).max(initial=0) >= 2.0 ** 40:
        raise ModelError(f"quantize: Winograd weights of {np.abs(u).max():.3g} input LSBs "
                         f"do not fit an integer lane")
    return u.astype(np.int64), bt, at, 1.0 / (kb * kb * ka * ka)


class _WinogradQuantizer(Quantizer):
    """``hwgen.nn.WinogradAdderConv2d`` (at ``p = 1``) → :class:`WinogradAdderConv2d`: the
    input scale is ``a / top`` (no weight term) and ``u`` is not clipped
    (:func:`winograd_weights`)."""

    weighted = True
    prefix = "conv"
    rank = 4

    def modules(self):
        from ..nn.winograd import WinogradAdderConv2d as TorchWinograd
        return (TorchWinograd,)

    def check(self, m):
        if m.p != 1.0:
            return (f" with p = {m.p}: the integer model is l1 (p = 1); finish the "
                    f"l2-to-l1 schedule (it ends at p = 1)")
        stride = getattr(m, "stride", 1)
        if (tuple(stride) if isinstance(stride, (tuple, list)) else (stride, stride)) != (1, 1):
            # The one refusal of a strided Winograd layer: the IR node has no stride.
            return (f" with stride {stride}: the Winograd F(2×2, 3×3) engine computes stride 1 "
                    f"only; use an AdderConv2d for stride 2")
        return None

    def quantize(self, module, name, s_in, options):
        uq, bt, at, factor = winograd_weights(module, s_in)
        layer = WinogradAdderConv2d(name=name, u=uq, bt=bt, at=at, padding=module.padding)
        n = len(uq)
        return QuantizedLayer(layer, np.full(n, s_in * factor), s_in * factor,
                              np.zeros(n, dtype=np.int64), {"adder_offsets": [0] * n})


WinogradAdderConv2d.quantizers = (_WinogradQuantizer(),)
