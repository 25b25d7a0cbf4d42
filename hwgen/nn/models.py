"""Model architectures by name: a small registry that :func:`build_model` reads.

Every architecture is a flat :class:`torch.nn.Sequential` of plain module types, so the
quantizer (:mod:`hwgen.quant`) can walk it layer by layer.  A configuration holds only JSON
values (ints, floats, lists), because it is stored in checkpoints.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from .adder import DEFAULT_ETA, AdderConv2d, AdderLinear
from .shift import DEFAULT_PRANGE, ShiftConv2d, ShiftLinear

__all__ = ["build_model", "register_arch", "archs", "default_config"]

_ARCHS: dict[str, tuple[Callable[..., nn.Module], dict]] = {}


def register_arch(name: str, defaults: dict):
    """Decorator: register ``builder(**config) -> nn.Module`` under ``name`` with its defaults."""
    def deco(builder):
        _ARCHS[name] = (builder, dict(defaults))
        return builder
    return deco


def archs() -> list[str]:
    return sorted(_ARCHS)


def default_config(arch: str) -> dict:
    _check_arch(arch)
    return dict(_ARCHS[arch][1])


def _check_arch(arch):
    if arch not in _ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; supported: {', '.join(archs())}")


def build_model(arch: str, **config) -> nn.Module:
    """Build architecture ``arch``; ``config`` overrides its defaults (see :func:`default_config`)."""
    _check_arch(arch)
    builder, defaults = _ARCHS[arch]
    unknown = sorted(set(config) - set(defaults))
    if unknown:
        raise ValueError(f"architecture {arch!r} has no option {unknown[0]!r}; "
                         f"options: {', '.join(sorted(defaults))}")
    return builder(**{**defaults, **config})


@register_arch("adder", {"channels": [8, 16], "in_channels": 1, "input_size": 8,
                         "num_classes": 10, "eta": DEFAULT_ETA})
def _adder(channels, in_channels, input_size, num_classes, eta):
    """The digits AdderNet: two (adder conv 3×3 → BN → ReLU → max-pool 2) blocks, adder dense, BN.

    With the defaults (8 and 16 channels on 8×8 digits) it has 1,864 adder weights.
    """
    return _digits_net(lambda c_in, c: AdderConv2d(c_in, c, 3, padding=1, eta=eta),
                       lambda k, o: AdderLinear(k, o, eta=eta), channels, in_channels, input_size, num_classes)


def _digits_net(conv, dense, channels, in_channels, input_size, num_classes):
    """Two (conv 3×3 pad 1 → BN → ReLU → max-pool 2) blocks, flatten, dense, BN1d.

    ``conv(c_in, c_out)`` and ``dense(k, o)`` build the weight layers; the same shape as "adder".
    """
    channels = list(channels)
    if not channels or any(not isinstance(c, int) or c < 1 for c in channels):
        raise ValueError(f"channels must be a non-empty list of positive integers, got {channels!r}")
    size = input_size
    layers: list[nn.Module] = []
    c_in = in_channels
    for c in channels:
        if size < 2:
            raise ValueError(f"{len(channels)} pooling blocks are too many for a {input_size}×{input_size} input")
        layers += [conv(c_in, c), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2)]
        c_in, size = c, size // 2
    layers += [nn.Flatten(), dense(c_in * size * size, num_classes), nn.BatchNorm1d(num_classes)]
    return nn.Sequential(*layers)


@register_arch("shift", {"channels": [8, 16], "in_channels": 1, "input_size": 8, "num_classes": 10,
                         "mode": "ps", "prange": list(DEFAULT_PRANGE)})
def _shift(channels, in_channels, input_size, num_classes, mode, prange):
    """The digits net of "adder" with DeepShift layers: weights ``s * 2**p``, ``p`` in ``prange``.

    ``mode`` is ``"ps"`` (sign and shift parameters) or ``"q"`` (float weight rounded in forward).
    """
    return _digits_net(lambda i, o: ShiftConv2d(i, o, 3, padding=1, mode=mode, prange=prange),
                       lambda k, o: ShiftLinear(k, o, mode=mode, prange=prange),
                       channels, in_channels, input_size, num_classes)


@register_arch("conv", {"channels": [8, 16], "in_channels": 1, "input_size": 8, "num_classes": 10})
def _conv(channels, in_channels, input_size, num_classes):
    """The digits net of "adder" with ordinary multiplier layers (``bias=False``): the baseline."""
    return _digits_net(lambda i, o: nn.Conv2d(i, o, 3, padding=1, bias=False),
                       lambda k, o: nn.Linear(k, o, bias=False),
                       channels, in_channels, input_size, num_classes)
