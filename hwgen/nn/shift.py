"""Shift layers (Elhoushi et al., "DeepShift: Towards Multiplication-Less Neural Networks",
CVPR-W 2021; the shift half of You et al., "ShiftAddNet", NeurIPS 2020): every effective
weight is a signed power of two,

    w = s * 2**p,   s in {-1, 0, +1},   p an integer in [pmin, pmax]  (default [-7, 0])

so ``x * w`` is a bit shift of ``x`` and a conditional negation: no multiplier.

Two training forms, chosen by ``mode``:

* ``"ps"`` (DeepShift-PS): the layer holds two float parameters of the weight shape,
  ``shift`` (``P``) and ``sign`` (``S``).  The forward uses ``p = clamp(round(P), pmin, pmax)``
  and ``s = sign(round(S))`` (ternary: ``|S| <= 0.5`` gives 0; ``torch.round`` rounds half to
  even); the backward passes the gradient straight through both roundings and the clamp, so
  ``dw/dP = w * ln 2`` and ``dw/dS = 2**p``.
* ``"q"`` (DeepShift-Q): the layer holds an ordinary float ``weight``; the forward rounds it to
  the nearest signed power of two (nearest in value, ties away from zero; magnitudes above
  ``2**pmax`` saturate to ``2**pmax``, magnitudes below ``2**(pmin-1)``, half the smallest
  power, become 0), the backward is the identity (straight-through estimator).
  DeepShift rounds ``log2|w|`` instead; the two differ only for ``|w|/2**floor(log2|w|)``
  in ``[sqrt 2, 1.5)``.

:meth:`ShiftConv2d.exported` gives the integer ``(sign, exponent)`` arrays the forward uses;
the quantizer turns the exponent into a non-negative integer shift (``shift = p - pmin``) and
folds ``2**pmin`` into the requantization scale.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ShiftConv2d", "ShiftLinear", "round_power_of_two", "effective_weight", "DEFAULT_PRANGE",
           "MODES"]

DEFAULT_PRANGE = (-7, 0)
MODES = ("ps", "q")


def _ste(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``q`` in the forward, identity gradient to ``x`` in the backward."""
    return x + (q - x).detach()


def round_power_of_two(w: torch.Tensor, pmin: int, pmax: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest ``s * 2**p`` to ``w`` with ``p`` in ``[pmin, pmax]``, or 0: returns ``(s, p)`` float tensors.

    ``p`` is ``pmin`` where ``s`` is 0.  No gradient (use ``_ste`` around it).
    """
    with torch.no_grad():
        mag = w.abs()
        tiny = torch.finfo(w.dtype).tiny
        p = torch.floor(torch.log2(mag.clamp_min(tiny)))
        # Nearest in value: between 2**p and 2**(p+1) the midpoint is 1.5 * 2**p.
        p = torch.where(mag >= 1.5 * torch.exp2(p), p + 1, p).clamp(pmin, pmax)
        s = torch.where(mag >= 2.0 ** (pmin - 1), torch.sign(w), torch.zeros_like(w))
        p = torch.where(s == 0, torch.full_like(p, pmin), p)
    return s, p


def effective_weight(params: list[torch.Tensor], mode: str, pmin: int, pmax: int) -> torch.Tensor:
    """The weight ``s * 2**p`` of a shift layer's parameters (see ``_ShiftBase.params``)."""
    if mode == "q":
        (weight,) = params
        s, p = round_power_of_two(weight, pmin, pmax)
        return _ste(weight, s * torch.exp2(p))
    shift, sign = params
    p = _ste(shift, shift.round().clamp(pmin, pmax))
    s = _ste(sign, torch.sign(sign.round()))
    return s * torch.exp2(p)


class _ShiftBase(nn.Module):
    def __init__(self, weight_shape, mode, prange):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"{type(self).__name__}: mode must be one of {', '.join(MODES)}, got {mode!r}")
        try:
            pmin, pmax = (int(v) for v in prange)
        except (TypeError, ValueError):
            raise ValueError(f"{type(self).__name__}: prange must be two integers (pmin, pmax), got {prange!r}") from None
        if pmin > pmax or list(prange) != [pmin, pmax]:
            raise ValueError(f"{type(self).__name__}: prange must be two integers with pmin <= pmax, got {prange!r}")
        self.mode, self.pmin, self.pmax = mode, pmin, pmax
        # Initialised like a convolution (He normal on the fan-in), then expressed in the form.
        w0 = torch.empty(weight_shape)
        nn.init.kaiming_normal_(w0, mode="fan_in", nonlinearity="relu")
        if mode == "q":
            self.weight = nn.Parameter(w0)
        else:
            s, p = round_power_of_two(w0, pmin, pmax)
            # Zero-rounded initial weights start as the smallest power with their sign, so that
            # every sign starts at +-1 and training decides which weights become 0.
            self.sign = nn.Parameter(torch.where(w0 >= 0, 1.0, -1.0))
            self.shift = nn.Parameter(p.clone())

    def params(self) -> list[torch.Tensor]:
        """The trained parameters: ``[weight]`` (``"q"``) or ``[shift, sign]`` (``"ps"``)."""
        return [self.weight] if self.mode == "q" else [self.shift, self.sign]

    def effective_weight(self) -> torch.Tensor:
        """The weight the forward uses: only values ``s * 2**p`` (``p`` in range) or 0."""
        return effective_weight(self.params(), self.mode, self.pmin, self.pmax)

    @torch.no_grad()
    def exported(self) -> tuple[np.ndarray, np.ndarray]:
        """Integer ``(sign, exponent)`` arrays of the weight shape, ``int64``.

        ``sign`` in ``{-1, 0, 1}``, ``exponent`` in ``[pmin, pmax]`` (``pmin`` where ``sign`` is 0);
        ``sign * 2.0**exponent`` equals :meth:`effective_weight` exactly.
        """
        if self.mode == "q":
            s, p = round_power_of_two(self.weight, self.pmin, self.pmax)
        else:
            p = self.shift.round().clamp(self.pmin, self.pmax)
            s = torch.sign(self.sign.round())
            p = torch.where(s == 0, torch.full_like(p, self.pmin), p)
        return s.to(torch.int64).numpy(), p.to(torch.int64).numpy()

    def _extra(self):
        return f"mode={self.mode!r}, prange=({self.pmin}, {self.pmax})"


def _check_ints(cls, **values):
    for name, (v, lo) in values.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < lo:
            raise ValueError(f"{cls}: {name} must be an integer >= {lo}, got {v!r}")


class ShiftConv2d(_ShiftBase):
    """Shift 2-D convolution, no bias (a BatchNorm follows): ``F.conv2d`` with the weight
    :meth:`effective_weight`.  Input ``(N, C, H, W)``, output ``(N, O, OH, OW)``, float32.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, mode: str = "ps", prange=DEFAULT_PRANGE):
        _check_ints("ShiftConv2d", in_channels=(in_channels, 1), out_channels=(out_channels, 1),
                    kernel_size=(kernel_size, 1), stride=(stride, 1), padding=(padding, 0))
        super().__init__((out_channels, in_channels, kernel_size, kernel_size), mode, prange)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x):
        if torch.compiler.is_exporting():  # one node for torch.export (see hwgen.nn.ops)
            return torch.ops.hwgen.shift_conv2d(x, self.params(), self.mode, self.pmin, self.pmax,
                                                self.stride, self.padding)
        return F.conv2d(x, self.effective_weight(), stride=self.stride, padding=self.padding)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, {self._extra()}")


class ShiftLinear(_ShiftBase):
    """Shift fully connected layer, no bias: ``y = x @ effective_weight().T``."""

    def __init__(self, in_features: int, out_features: int, mode: str = "ps", prange=DEFAULT_PRANGE):
        _check_ints("ShiftLinear", in_features=(in_features, 1), out_features=(out_features, 1))
        super().__init__((out_features, in_features), mode, prange)
        self.in_features, self.out_features = in_features, out_features

    def forward(self, x):
        if torch.compiler.is_exporting():
            return torch.ops.hwgen.shift_linear(x, self.params(), self.mode, self.pmin, self.pmax)
        return F.linear(x, self.effective_weight())

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, {self._extra()}"
