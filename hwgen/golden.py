"""The golden model: a bit-exact NumPy executor of an integer model (:mod:`hwgen.ir`).

This is the one oracle of hwgen.  Every hardware test compares against it; nothing else
re-derives the arithmetic.  All arithmetic is in ``int64`` and every intermediate tensor is
checked against the exact interval derived by :meth:`hwgen.ir.Model.value_ranges`, so an
overflow of the derived bit widths is an error here, not a silent wrap.

Rounding.  The only right shift is the one in ``Requant``: ``>>`` on int64, an arithmetic shift
right, which rounds toward minus infinity (floor) for negative numbers too: ``-5 >> 1 == -3``,
``-1 >> 4 == -1`` (not toward zero, as ``int(-5 / 2) == -2`` would).  That is exactly the
hardware's arithmetic shift right of a two's-complement number (Verilog ``>>>`` on a signed
value, Amaranth ``>>`` on a signed ``Value``), so the two agree bit for bit; the quantizer makes
this round-to-nearest by adding ``1 << (shift - 1)`` into the requantizer's bias.  Shift layers
only shift *left* (``x << p``, ``p >= 0``), which is exact for negative ``x`` as well (a signed
input occurs after a requantizer without ReLU) while the value stays inside the derived range.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from . import ir

# Upper bound on elements of one broadcast |x - w| block, to keep memory flat.
_BLOCK_ELEMENTS = 1 << 24


def im2col(x: np.ndarray, kh: int, kw: int, stride: int, padding: int) -> np.ndarray:
    """``(N, C, H, W)`` → ``(N, OH*OW, C*KH*KW)``, zero padded, in PyTorch's unfold order."""
    if padding:
        x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    win = sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]
    n, c, oh, ow = win.shape[:4]
    return win.transpose(0, 2, 3, 1, 4, 5).reshape(n, oh * ow, c * kh * kw), (oh, ow)


def l1_matrix(cols: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``-sum_k |cols[..., k] - weight[o, k]|``: ``(..., K)`` × ``(O, K)`` → ``(..., O)``."""
    lead = cols.shape[:-1]
    flat = cols.reshape(-1, cols.shape[-1]).astype(np.int64)
    w = weight.astype(np.int64)
    rows = max(1, _BLOCK_ELEMENTS // max(1, w.size))
    out = np.empty((flat.shape[0], w.shape[0]), dtype=np.int64)
    for start in range(0, flat.shape[0], rows):
        block = flat[start:start + rows]
        out[start:start + rows] = -np.abs(block[:, None, :] - w[None, :, :]).sum(axis=2)
    return out.reshape(*lead, w.shape[0])


def mac_matrix(cols: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``sum_k cols[..., k] * weight[o, k]`` in exact int64."""
    return cols.astype(np.int64) @ weight.astype(np.int64).T


def shift_matrix(cols: np.ndarray, sign: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """``sum_k sign[o, k] * (cols[..., k] << shift[o, k])`` in exact int64: ``(..., K)`` → ``(..., O)``.

    Computed as the hardware does, shift then signed add: for every shift amount ``p`` present,
    ``x << p`` is added with the signs of the weights that shift by ``p``.  Only left shifts occur
    (``shift >= 0``), and a left shift of an int64 is exact for any sign of ``x`` (multiplication
    by ``2**p``) while the value stays in range (the derived ranges and ``max_shift <= 30`` keep it
    so).  The inputs are non-negative after a ReLU; they can be negative when the requantizer before
    has no ReLU, and the hardware's left shift of a two's-complement number is the same exact product.
    """
    x = cols.astype(np.int64)
    sign, shift = sign.astype(np.int64), shift.astype(np.int64)
    out = np.zeros(x.shape[:-1] + (sign.shape[0],), dtype=np.int64)
    for p in np.unique(shift[sign != 0]):
        out += (x << p) @ np.where(shift == p, sign, 0).T
    return out


def _conv(layer: ir._Conv, x: np.ndarray, matrix) -> np.ndarray:
    o, _, kh, kw = layer.weight.shape
    cols, (oh, ow) = im2col(x, kh, kw, layer.stride, layer.padding)
    y = matrix(cols, layer.weight.reshape(o, -1))  # (N, L, O)
    return y.transpose(0, 2, 1).reshape(x.shape[0], o, oh, ow)


def requant(layer: ir.Requant, x: np.ndarray) -> np.ndarray:
    shape = (1, -1) + (1,) * (x.ndim - 2)
    s = x.astype(np.int64) * layer.mult.reshape(shape) + layer.bias.reshape(shape)
    return np.clip(s >> layer.shift, *layer.clamp)


def pool_windows(x: np.ndarray, size: int, stride: int, padding: int, fill: int) -> np.ndarray:
    """``(N, C, H, W)`` → ``(N, C, OH, OW, size, size)``: every pool window, floor mode, the
    padding filled with ``fill``."""
    if padding:
        x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)), constant_values=fill)
    return sliding_window_view(x, (size, size), axis=(2, 3))[:, :, ::stride, ::stride]


def maxpool(layer: ir.MaxPool2d, x: np.ndarray) -> np.ndarray:
    # A padded position never wins: it holds the smallest int64.
    fill = np.iinfo(np.int64).min
    return pool_windows(x, layer.size, layer.stride, layer.padding, fill).max(axis=(4, 5))


def sumpool(layer: ir.SumPool2d, x: np.ndarray) -> np.ndarray:
    return pool_windows(x, layer.size, layer.stride, layer.padding, 0).sum(axis=(4, 5))


def shift_conv(layer: ir.ShiftConv2d, x: np.ndarray) -> np.ndarray:
    o, _, kh, kw = layer.sign.shape
    cols, (oh, ow) = im2col(x, kh, kw, layer.stride, layer.padding)
    y = shift_matrix(cols, layer.sign.reshape(o, -1), layer.shift.reshape(o, -1))  # (N, L, O)
    return y.transpose(0, 2, 1).reshape(x.shape[0], o, oh, ow)


def winograd_adder(x: np.ndarray, u: np.ndarray, bt: np.ndarray, at: np.ndarray, padding: int) -> np.ndarray:
    """Winograd-AdderNet F(2×2, 3×3): ``(N, C, H, W)`` → ``(N, O, H + 2·padding - 2, W + 2·padding - 2)``.

    Per 4×4 tile ``d`` (step 2) and input channel: ``V = bt d btᵀ``; lanes ``M[o] = -sum_c |u[o, c] - V[c]|``;
    output tile ``at M[o] atᵀ``.  Odd output sizes: the input is completed to whole tiles with zeros at
    the bottom/right and the output cropped.  Dtype-generic: integer inputs run in exact int64 (the
    golden model), float inputs in float64 (to check the formula against a float reference).
    """
    dtype = np.int64 if np.asarray(x).dtype.kind in "biu" and np.asarray(u).dtype.kind in "biu" else np.float64
    x, u = np.asarray(x).astype(dtype), np.asarray(u).astype(dtype)
    bt, at = np.asarray(bt).astype(dtype), np.asarray(at).astype(dtype)
    n, c, h, w = x.shape
    o = u.shape[0]
    oh, ow = h + 2 * padding - 2, w + 2 * padding - 2
    th, tw = (oh + 1) // 2, (ow + 1) // 2
    x = np.pad(x, ((0, 0), (0, 0), (padding, 2 * th + 2 - h - padding), (padding, 2 * tw + 2 - w - padding)))
    d = sliding_window_view(x, (4, 4), axis=(2, 3))[:, :, ::2, ::2]          # (N, C, TH, TW, 4, 4)
    v = np.einsum("ik,nctwkl,jl->ntwcij", bt, d, bt)                         # (N, TH, TW, C, 4, 4)
    v = v.reshape(-1, c, 16)
    uf = u.reshape(o, c, 16)
    m = np.empty((v.shape[0], o, 16), dtype=dtype)
    rows = max(1, _BLOCK_ELEMENTS // max(1, uf.size))
    for start in range(0, v.shape[0], rows):
        block = v[start:start + rows]
        m[start:start + rows] = -np.abs(block[:, None] - uf[None]).sum(axis=2)
    m = m.reshape(n, th, tw, o, 4, 4)
    y = np.einsum("ai,ntwoij,bj->notawb", at, m, at).reshape(n, o, 2 * th, 2 * tw)
    return y[:, :, :oh, :ow]


EXECUTORS = {
    "winograd_adder_conv2d": lambda layer, x: winograd_adder(x, layer.u, layer.bt, layer.at, layer.padding),
    "adder_conv2d": lambda layer, x: _conv(layer, x, l1_matrix),
    "conv2d": lambda layer, x: _conv(layer, x, mac_matrix),
    "shift_conv2d": shift_conv,
    "shift_dense": lambda layer, x: shift_matrix(x, layer.sign, layer.shift),
    "adder_dense": lambda layer, x: l1_matrix(x, layer.weight),
    "dense": lambda layer, x: mac_matrix(x, layer.weight),
    "requant": requant,
    "maxpool2d": maxpool,
    "sumpool2d": sumpool,
    "global_sumpool2d": lambda layer, x: x.sum(axis=(2, 3), keepdims=True),
    "flatten": lambda layer, x: x.reshape(x.shape[0], -1),
}


@dataclass
class Result:
    """Output of :func:`run`: the scores, the predicted classes and every layer's tensor."""

    scores: np.ndarray        # (N, classes) int64
    argmax: np.ndarray        # (N,) int64, first maximum wins (as the hardware)
    layers: list[np.ndarray]  # output of each layer, (N, ...) int64


def run(model: ir.Model, x: np.ndarray, check_ranges: bool = True) -> Result:
    """Execute ``model`` on integer inputs ``x`` of shape ``(N, C, H, W)``."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[None]
    if tuple(x.shape[1:]) != model.input_shape:
        raise ValueError(f"input shape {x.shape[1:]} does not match the model's {model.input_shape}")
    lo, hi = model.input_range
    if x.size and (x.min() < lo or x.max() > hi):
        raise ValueError(f"input values outside [{lo}, {hi}] ({model.input_bits}-bit unsigned)")
    x = x.astype(np.int64)
    outs = []
    ranges = model.value_ranges()  # refuses a model whose int64 arithmetic could wrap
    for i, layer in enumerate(model.layers):
        x = execute(layer, x)
        if check_ranges and x.size:
            r_lo, r_hi = ranges[i]
            if x.min() < r_lo or x.max() > r_hi:
                raise AssertionError(f"{layer.name}: values [{x.min()}, {x.max()}] outside the derived "
                                     f"range [{r_lo}, {r_hi}]; the width derivation is wrong")
        outs.append(x)
    return Result(scores=x, argmax=np.argmax(x, axis=1), layers=outs)


def execute(layer: ir.Layer, x: np.ndarray) -> np.ndarray:
    """Execute one layer on a batch."""
    try:
        fn = EXECUTORS[layer.kind]
    except KeyError:
        raise ir.ModelError(f"the golden model cannot execute layer kind {layer.kind!r}") from None
    return fn(layer, x)


def accuracy(model: ir.Model, x: np.ndarray, labels: np.ndarray) -> float:
    return float((run(model, x).argmax == np.asarray(labels)).mean())
