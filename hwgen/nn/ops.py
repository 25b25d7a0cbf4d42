"""hwgen's layers as PyTorch custom operators (:mod:`torch.library`), for :func:`torch.export`.

Under :func:`torch.export.export` every hwgen layer calls its operator instead of its eager
code, so the exported graph keeps the layer as one node that names its parameters (and
:mod:`hwgen.capture` maps it back to the layer)::

    hwgen::adder_conv2d(x, weight, stride, padding, eta)
    hwgen::adder_linear(x, weight, eta)
    hwgen::shift_conv2d(x, params, mode, pmin, pmax, stride, padding)
    hwgen::shift_linear(x, params, mode, pmin, pmax)
    hwgen::winograd_adder_conv2d(x, weight, bt, g, at, padding, p, eta)

``params`` of a shift layer is ``[weight]`` (mode ``"q"``) or ``[shift, sign]`` (``"ps"``), as
:meth:`hwgen.nn.shift.ShiftConv2d.params`.  Each operator's kernel is the layer's functional
form and its fake kernel gives the output shape.  Outside export the layers run their eager
code, with their own autograd, so training does not go through these operators; the operators
have no backward (an exported program is for inference).

Importing :mod:`hwgen.nn` registers them, which :func:`torch.export.load` needs to read a
``.pt2`` file holding hwgen layers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .adder import adder_conv2d as _adder_conv2d
from .adder import adder_l1
from .shift import effective_weight
from .winograd import winograd_adder_conv2d as _winograd_adder_conv2d

__all__ = ["adder_conv2d", "adder_linear", "shift_conv2d", "shift_linear", "winograd_adder_conv2d",
           "OPS"]


def _conv_shape(x, out_channels, kh, kw, stride, padding):
    n, _, h, w = x.shape
    return (n, out_channels, (h + 2 * padding - kh) // stride + 1,
            (w + 2 * padding - kw) // stride + 1)


@torch.library.custom_op("hwgen::adder_conv2d", mutates_args=())
def adder_conv2d(x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int,
                 eta: float | None) -> torch.Tensor:
    return _adder_conv2d(x, weight, stride, padding, eta)


@adder_conv2d.register_fake
def _(x, weight, stride, padding, eta):
    return x.new_empty(_conv_shape(x, weight.shape[0], *weight.shape[2:], stride, padding))


@torch.library.custom_op("hwgen::adder_linear", mutates_args=())
def adder_linear(x: torch.Tensor, weight: torch.Tensor, eta: float | None) -> torch.Tensor:
    return adder_l1(x, weight, eta)


@adder_linear.register_fake
def _(x, weight, eta):
    return x.new_empty((x.shape[0], weight.shape[0]))


@torch.library.custom_op("hwgen::shift_conv2d", mutates_args=())
def shift_conv2d(x: torch.Tensor, params: list[torch.Tensor], mode: str, pmin: int, pmax: int,
                 stride: int, padding: int) -> torch.Tensor:
    return F.conv2d(x, effective_weight(params, mode, pmin, pmax), stride=stride, padding=padding)


@shift_conv2d.register_fake
def _(x, params, mode, pmin, pmax, stride, padding):
    w = params[0]
    return x.new_empty(_conv_shape(x, w.shape[0], *w.shape[2:], stride, padding))


@torch.library.custom_op("hwgen::shift_linear", mutates_args=())
def shift_linear(x: torch.Tensor, params: list[torch.Tensor], mode: str, pmin: int,
                 pmax: int) -> torch.Tensor:
    return F.linear(x, effective_weight(params, mode, pmin, pmax))


@shift_linear.register_fake
def _(x, params, mode, pmin, pmax):
    return x.new_empty((x.shape[0], params[0].shape[0]))


@torch.library.custom_op("hwgen::winograd_adder_conv2d", mutates_args=())
def winograd_adder_conv2d(x: torch.Tensor, weight: torch.Tensor, bt: torch.Tensor, g: torch.Tensor,
                          at: torch.Tensor, padding: int, p: float,
                          eta: float | None) -> torch.Tensor:
    return _winograd_adder_conv2d(x, weight, bt, at, padding, p, eta)


@winograd_adder_conv2d.register_fake
def _(x, weight, bt, g, at, padding, p, eta):
    n, _, h, w = x.shape
    return x.new_empty((n, weight.shape[0], h + 2 * padding - 2, w + 2 * padding - 2))


#: The operator packets, by name (``torch.ops.hwgen.<name>``).
OPS = {name: getattr(torch.ops.hwgen, name) for name in
       ("adder_conv2d", "adder_linear", "shift_conv2d", "shift_linear", "winograd_adder_conv2d")}
