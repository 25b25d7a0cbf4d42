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

from . import ir
# The executors live with their kinds (hwgen.kinds); their kernels are re-exported here.
from .kinds import im2col, l1_matrix, mac_matrix, shift_matrix
from .kinds.maxpool import maxpool
from .kinds.requant import requant
from .kinds.sumpool import sumpool
from .kinds.winograd_adder import winograd_adder

__all__ = ["Result", "run", "execute", "accuracy", "im2col", "l1_matrix", "mac_matrix",
           "shift_matrix", "winograd_adder", "requant", "maxpool", "sumpool"]


@dataclass
class Result:
    """Output of :func:`run`: the scores, the predicted classes and every layer's tensor."""

    scores: np.ndarray        # (N, classes) int64
    argmax: np.ndarray        # (N,) int64, first maximum wins (as the hardware)
    layers: list[np.ndarray]  # output of each layer (in the order of model.layers), (N, ...) int64


def run(model: ir.Model, x: np.ndarray, check_ranges: bool = True) -> Result:
    """Execute ``model`` on integer inputs ``x`` of shape ``(N, C, H, W)``: every node in
    topological order on the tensors it names."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[None]
    if tuple(x.shape[1:]) != model.input_shape:
        raise ValueError(f"input shape {x.shape[1:]} does not match the model's {model.input_shape}")
    lo, hi = model.input_range
    if x.size and (x.min() < lo or x.max() > hi):
        raise ValueError(f"input values outside [{lo}, {hi}] ({model.input_bits}-bit unsigned)")
    tensors = {ir.INPUT: x.astype(np.int64)}
    ranges = model.value_ranges()  # refuses a model whose int64 arithmetic could wrap
    wiring = model.inputs_of()
    for i in model.order():
        layer = model.layers[i]
        y = layer.run([tensors[t] for t in wiring[i]])
        if check_ranges and y.size:
            r_lo, r_hi = ranges[i]
            if y.min() < r_lo or y.max() > r_hi:
                raise AssertionError(f"{layer.name}: values [{y.min()}, {y.max()}] outside the "
                                     f"derived range [{r_lo}, {r_hi}]; the width derivation is "
                                     f"wrong")
        tensors[layer.name] = y
    scores = tensors[model.output_name]
    return Result(scores=scores, argmax=np.argmax(scores, axis=1),
                  layers=[tensors[layer.name] for layer in model.layers])


def execute(layer: ir.Layer, x: np.ndarray) -> np.ndarray:
    """Execute one (single-input) layer on a batch: the kind's executor."""
    return layer.execute(x)


def accuracy(model: ir.Model, x: np.ndarray, labels: np.ndarray) -> float:
    return float((run(model, x).argmax == np.asarray(labels)).mean())
