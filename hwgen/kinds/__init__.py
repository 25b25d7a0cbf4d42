"""The registry of layer kinds: one module per kind, each defining it once.

======================  ====================================================================
:mod:`.adder`           ``adder_conv2d``, ``adder_dense`` (AdderNet, l1)
:mod:`.shift`           ``shift_conv2d``, ``shift_dense`` (DeepShift, ``sign · (x << p)``)
:mod:`.conv`            ``conv2d``, ``dense`` (the multiplier baseline)
:mod:`.winograd_adder`  ``winograd_adder_conv2d`` (Winograd-AdderNet F(2×2, 3×3))
:mod:`.requant`         ``requant`` (shift-and-add requantization)
:mod:`.maxpool`         ``maxpool2d`` (any stride and padding; :mod:`.pool` the shared geometry)
:mod:`.sumpool`         ``sumpool2d``, ``global_sumpool2d`` (average pools without the divider)
:mod:`.flatten`         ``flatten``
:mod:`.add`             ``add`` (residual addition, saturating)
:mod:`.shortcut`        ``subsample_pad`` (the option-A shortcut: subsample, zero channels)
======================  ====================================================================

What a kind defines, and how a new one plugs in, is in :mod:`.base`: a subclass of
:class:`~.base.Layer` decorated with :func:`~hwgen.kinds.base.register`.  ShiftAddNet is no
kind of its own: it is a shift layer followed by an adder layer.  Importing this package imports
NumPy only (the quantizer handlers import torch when called).
"""

from .base import (OP_TYPES, Layer, ModelError, Op, Quantizer, QuantizedLayer, kind_class,
                   layer_kinds, register, registered)
from .matrix import ConvLayer, DenseLayer, im2col
from .adder import AdderConv2d, AdderDense, l1_matrix
from .shift import ShiftConv2d, ShiftDense, shift_matrix, split_power_of_two
from .conv import Conv2d, Dense, mac_matrix
# The executors of these four share their module's name: not re-exported, so that
# hwgen.kinds.requant (and .maxpool, .sumpool, .winograd_adder) stays the module.
from .winograd_adder import WinogradAdderConv2d
from .requant import Requant
from .maxpool import MaxPool2d
from .sumpool import GlobalSumPool2d, SumPool2d
from .flatten import Flatten
from .add import Add
from .shortcut import SubsamplePad

__all__ = [
    "OP_TYPES", "Layer", "ModelError", "Op", "Quantizer", "QuantizedLayer", "kind_class",
    "layer_kinds", "register", "registered", "ConvLayer", "DenseLayer", "im2col",
    "AdderConv2d", "AdderDense", "l1_matrix", "ShiftConv2d", "ShiftDense", "shift_matrix",
    "split_power_of_two", "Conv2d", "Dense", "mac_matrix", "WinogradAdderConv2d",
    "Requant", "MaxPool2d", "SumPool2d", "GlobalSumPool2d", "Flatten", "Add", "SubsamplePad",
]
