"""Model architectures by name: a small registry that :func:`~hwgen.nn.models.build_model` reads.

Every architecture is a flat :class:`torch.nn.Sequential` of plain module types, so the
quantizer (:mod:`hwgen.quant`) can walk it layer by layer.  A configuration holds only JSON
values (ints, floats, strings, lists, null), because it is stored in checkpoints.

The digits architectures share one shape (``_digits_net``): ``adder`` (AdderNet), ``shift``
(DeepShift), ``shiftadd`` (ShiftAddNet), ``winograd-adder`` (Winograd-AdderNet) and ``conv`` (the
multiplier baseline); ``mixed`` takes one of those families per layer.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from ..errors import HwgenError
from .adder import DEFAULT_ETA, AdderConv2d, AdderLinear
from .shift import DEFAULT_PRANGE, ShiftConv2d, ShiftLinear
from .winograd import WinogradAdderConv2d, transform_set

__all__ = ["build_model", "register_arch", "archs", "default_config", "FREEZE", "ConfigError",
           "input_hw", "input_shape", "per_layer", "MIXED_KINDS"]

FREEZE = ("none", "shift", "add")  # the shiftadd arch's ``freeze`` options

_ARCHS: dict[str, tuple[Callable[..., nn.Module], dict]] = {}


class ConfigError(HwgenError, ValueError):
    """An architecture name or option a user can mend (one line)."""


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
        raise ConfigError(f"unknown architecture {arch!r}; supported: {', '.join(archs())}")


def build_model(arch: str, **config) -> nn.Module:
    """Build architecture ``arch``; ``config`` overrides its defaults (see :func:`default_config`)."""
    _check_arch(arch)
    builder, defaults = _ARCHS[arch]
    unknown = sorted(set(config) - set(defaults))
    if unknown:
        raise ConfigError(f"architecture {arch!r} has no option {unknown[0]!r}; "
                         f"options: {', '.join(sorted(defaults))}")
    try:
        return builder(**{**defaults, **config})
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        # A builder or a layer refusing an option value: the user's to mend, in one line.
        raise ConfigError(f"architecture {arch!r}: {e}") from None


_GEOMETRY = {"kernel": 3, "stride": 1, "padding": 1}  # per block: one value, or one per block


@register_arch("adder", {"channels": [8, 16], "in_channels": 1, "input_size": 8,
                         "num_classes": 10, "eta": DEFAULT_ETA, **_GEOMETRY})
def _adder(channels, in_channels, input_size, num_classes, eta, kernel, stride, padding):
    """The digits AdderNet: two (adder conv 3×3 → BN → ReLU → max-pool 2) blocks, adder dense, BN.

    With the defaults (8 and 16 channels on 8×8 digits) it has 1,864 adder weights.
    """
    return _digits_net(lambda c_in, c, k, s, p: AdderConv2d(c_in, c, k, stride=s, padding=p,
                                                            eta=eta),
                       lambda k, o: AdderLinear(k, o, eta=eta), channels, in_channels, input_size,
                       num_classes, kernel, stride, padding)


@register_arch("winograd-adder", {"channels": [8, 16], "in_channels": 1, "input_size": 8,
                                  "num_classes": 10, "eta": DEFAULT_ETA, "transform": "standard",
                                  "l2_to_l1": True, "padding": 1})
def _winograd_adder(channels, in_channels, input_size, num_classes, eta, transform, l2_to_l1,
                    padding):
    """The digits net of "adder" with Winograd-AdderNet convolutions (:mod:`hwgen.nn.winograd`).

    The two 3×3 adder convs become :class:`~hwgen.nn.winograd.WinogradAdderConv2d` (padding 1,
    F(2×2, 3×3) tiles), the dense stays :class:`AdderLinear`.  ``transform``: ``"standard"``,
    ``"balanced"`` or a dict ``{"bt", "g", "at"}`` (checked here: a bad set is a one-line error);
    ``l2_to_l1``: anneal the lane exponent from 2 to 1 over the first half of training; ``eta``:
    the adaptive learning rate of every adder weight.  With the defaults it has 2,176 ``U``
    entries (16 per channel pair instead of 9: the direct form has 1,224) and 640 dense weights.
    """
    try:
        transform_set(transform)  # the error names the set, before any layer is built
    except ValueError as e:
        raise ConfigError(f"winograd-adder: {e}") from None
    if not isinstance(l2_to_l1, bool):
        raise ConfigError(f"winograd-adder: l2_to_l1 must be true or false, got {l2_to_l1!r}")
    return _digits_net(lambda c_in, c, k, s, p: WinogradAdderConv2d(c_in, c, padding=p,
                                                                    transform=transform, eta=eta,
                                                                    l2_to_l1=l2_to_l1),
                       lambda k, o: AdderLinear(k, o, eta=eta), channels, in_channels, input_size,
                       num_classes, 3, 1, padding)


def _digits_net(conv, dense, channels, in_channels, input_size, num_classes, kernel=3, stride=1,
                padding=1):
    """Blocks of (conv → BN → ReLU → max-pool 2), one per entry of ``channels``, then flatten,
    dense, BN1d.

    ``conv(c_in, c_out, kernel, stride, padding)`` and ``dense(k, o)`` build the weight layers: a
    module, or a list of modules applied in turn (kept flat in the Sequential).  ``kernel``,
    ``stride`` and ``padding`` are one integer for every block or one per block (a list, or
    ``"5,3"``); ``input_size`` is ``H`` (square), ``[H, W]`` or ``"HxW"``.
    """
    channels = list(channels)
    if not channels or any(not isinstance(c, int) or c < 1 for c in channels):
        raise ValueError(f"channels must be a non-empty list of positive integers, got {channels!r}")
    h, w = input_hw(input_size)
    geometry = [per_layer(name, value, len(channels), lo) for name, value, lo in
                (("kernel", kernel, 1), ("stride", stride, 1), ("padding", padding, 0))]
    layers: list[nn.Module] = []
    c_in = in_channels
    for i, (c, k, s, p) in enumerate(zip(channels, *geometry)):
        oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        if min(oh, ow) < 2:
            raise ValueError(f"block {i} (kernel {k}, stride {s}, padding {p}) leaves a "
                             f"{max(oh, 0)}×{max(ow, 0)} map of a {h}×{w} input: too small for its 2×2 pool")
        layers += [*_as_list(conv(c_in, c, k, s, p)), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2)]
        c_in, h, w = c, oh // 2, ow // 2
    layers += [nn.Flatten(), *_as_list(dense(c_in * h * w, num_classes)),
               nn.BatchNorm1d(num_classes)]
    return nn.Sequential(*layers)


def input_hw(size) -> tuple[int, int]:
    """``input_size`` as ``(H, W)``: an integer (square), ``[H, W]`` or ``"HxW"``."""
    value = size
    if isinstance(size, str):
        try:
            value = [int(v) for v in size.lower().replace("×", "x").split("x")]
        except ValueError:
            value = None
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value, value]
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in value)):
        raise ConfigError(f"input_size must be a positive integer, [H, W] or 'HxW', got {size!r}")
    return int(value[0]), int(value[1])


def input_shape(config: dict) -> tuple[int, int, int]:
    """``(C, H, W)`` of the images an architecture's ``config`` takes."""
    return (int(config.get("in_channels", 1)), *input_hw(config["input_size"]))


def per_layer(name: str, value, n: int, lo: int = 0) -> list[int]:
    """An option given for every layer: one integer, a list of ``n``, or ``"a,b,…"``."""
    values = value
    if isinstance(value, str):
        try:
            values = [int(v) for v in value.split(",")]
        except ValueError:
            values = None
    if isinstance(values, int) and not isinstance(values, bool):
        values = [values] * n
    if (not isinstance(values, (list, tuple)) or len(values) != n
            or any(not isinstance(v, int) or isinstance(v, bool) or v < lo for v in values)):
        raise ConfigError(f"{name} must be an integer >= {lo} or {n} of them (one per block), "
                          f"got {value!r}")
    return [int(v) for v in values]


def _as_list(built) -> list[nn.Module]:
    return list(built) if isinstance(built, (list, tuple)) else [built]


@register_arch("shift", {"channels": [8, 16], "in_channels": 1, "input_size": 8, "num_classes": 10,
                         "mode": "ps", "prange": list(DEFAULT_PRANGE), **_GEOMETRY})
def _shift(channels, in_channels, input_size, num_classes, mode, prange, kernel, stride, padding):
    """The digits net of "adder" with DeepShift layers: weights ``s * 2**p``, ``p`` in ``prange``.

    ``mode`` is ``"ps"`` (sign and shift parameters) or ``"q"`` (float weight rounded in forward).
    """
    return _digits_net(lambda i, o, k, s, p: ShiftConv2d(i, o, k, stride=s, padding=p, mode=mode,
                                                         prange=prange),
                       lambda k, o: ShiftLinear(k, o, mode=mode, prange=prange),
                       channels, in_channels, input_size, num_classes, kernel, stride, padding)


@register_arch("conv", {"channels": [8, 16], "in_channels": 1, "input_size": 8, "num_classes": 10,
                        **_GEOMETRY})
def _conv(channels, in_channels, input_size, num_classes, kernel, stride, padding):
    """The digits net of "adder" with ordinary multiplier layers (``bias=False``): the baseline."""
    return _digits_net(lambda i, o, k, s, p: nn.Conv2d(i, o, k, stride=s, padding=p, bias=False),
                       lambda k, o: nn.Linear(k, o, bias=False),
                       channels, in_channels, input_size, num_classes, kernel, stride, padding)


@register_arch("shiftadd", {"channels": [8, 16], "in_channels": 1, "input_size": 8, "num_classes": 10,
                            "mode": "ps", "prange": list(DEFAULT_PRANGE), "eta": DEFAULT_ETA,
                            "add_kernel": 1, "freeze": "none", **_GEOMETRY})
def _shiftadd(channels, in_channels, input_size, num_classes, mode, prange, eta, add_kernel, freeze,
              kernel, stride, padding):
    """The digits net of "adder" with ShiftAddNet blocks (You et al., "ShiftAddNet: A
    Hardware-Inspired Deep Network", NeurIPS 2020).

    Every conv becomes a shift conv 3×3 (``c_in → c``, DeepShift ``mode``/``prange``) followed
    directly, with no BatchNorm or ReLU between, by an adder conv (``c → c``, ``add_kernel``,
    zero padding ``add_kernel // 2`` so the size is kept), then BN → ReLU → max-pool 2; the dense
    becomes ShiftLinear(k → classes) followed directly by AdderLinear(classes → classes), then BN1d.

    ``freeze``: ``"none"`` trains both parts; ``"shift"`` keeps the shift layers at their random
    initialisation and ``"add"`` the adder layers (their parameters get ``requires_grad=False``
    and :func:`hwgen.nn.train.train` leaves them out of the optimizer).  The paper reports that
    fixed shift layers keep the accuracy (its "ShiftAddNet (fixed shift)").

    Same as the paper's code: the block ``nn.Sequential(SEConv2d shift conv, Adder2D)`` with no
    BatchNorm between; a 1×1 adder after the 3×3 shift conv as in its small-CNN model
    (``add_kernel=1``; its ResNet-20 uses a 3×3 adder: ``add_kernel=3``); the adder's adaptive
    learning rate ``eta``; freezing one part.  Not the same: the shift layers are DeepShift
    PS/Q (:mod:`hwgen.nn.shift`) rather than the paper's SEConv2d with weight sparsification
    thresholds; no residual connections; the dense head is also a shift → adder pair.
    With the defaults it has 1,864 shift and 420 adder weights.
    """
    if freeze not in FREEZE:
        raise ValueError(f"shiftadd: freeze must be one of {', '.join(FREEZE)}, got {freeze!r}")
    if not isinstance(add_kernel, int) or isinstance(add_kernel, bool) or add_kernel < 1 or add_kernel % 2 == 0:
        raise ValueError(f"shiftadd: add_kernel must be an odd integer >= 1 (the size is kept), got {add_kernel!r}")
    model = _digits_net(
        lambda i, o, k, s, p: [ShiftConv2d(i, o, k, stride=s, padding=p, mode=mode, prange=prange),
                               AdderConv2d(o, o, add_kernel, padding=add_kernel // 2, eta=eta)],
        lambda k, o: [ShiftLinear(k, o, mode=mode, prange=prange), AdderLinear(o, o, eta=eta)],
        channels, in_channels, input_size, num_classes, kernel, stride, padding)
    frozen = {"none": (), "shift": (ShiftConv2d, ShiftLinear), "add": (AdderConv2d, AdderLinear)}[freeze]
    for m in model.modules():
        if frozen and isinstance(m, frozen):
            for p in m.parameters():
                p.requires_grad_(False)
    return model


#: The operator families a layer of the ``mixed`` architecture can be (one per block + the dense).
MIXED_KINDS = ("conv", "adder", "shift", "shiftadd", "winograd-adder")


@register_arch("mixed", {"channels": [8, 16], "in_channels": 1, "input_size": 8, "num_classes": 10,
                         "kinds": "adder,shift,conv", "mode": "ps", "prange": list(DEFAULT_PRANGE),
                         "eta": DEFAULT_ETA, "add_kernel": 1, **_GEOMETRY})
def _mixed(channels, in_channels, input_size, num_classes, kinds, mode, prange, eta, add_kernel,
           kernel, stride, padding):
    """The digits net with one operator family per layer (a hybrid network, as in ShiftAddNAS).

    ``kinds``: one of :data:`MIXED_KINDS` per block and one for the dense head (a list, or
    ``"adder,shift,conv"``), each layer built as in that family's own architecture: ``conv`` a
    multiplier layer, ``adder`` an AdderNet layer (``eta``), ``shift`` a DeepShift layer
    (``mode``, ``prange``), ``shiftadd`` a shift layer followed by an adder layer
    (``add_kernel``), ``winograd-adder`` a Winograd-AdderNet conv (kernel 3, stride 1; its dense
    head is an adder layer, as in that architecture).
    """
    names = [k.strip() for k in kinds.split(",")] if isinstance(kinds, str) else kinds
    if (not isinstance(names, (list, tuple)) or len(names) != len(channels) + 1
            or any(k not in MIXED_KINDS for k in names)):
        raise ValueError(f"mixed: kinds must name {len(channels) + 1} layers (one per block and "
                         f"the dense head), each one of {', '.join(MIXED_KINDS)}; got {kinds!r}")
    if not isinstance(add_kernel, int) or isinstance(add_kernel, bool) or add_kernel % 2 == 0:
        raise ValueError(f"mixed: add_kernel must be an odd integer >= 1, got {add_kernel!r}")
    geometry = [per_layer(name, value, len(channels), lo) for name, value, lo in
                (("kernel", kernel, 1), ("stride", stride, 1), ("padding", padding, 0))]
    for i, (kind, k, s) in enumerate(zip(names, *geometry[:2])):
        if kind == "winograd-adder" and (k, s) != (3, 1):
            raise ValueError(f"mixed: block {i} is winograd-adder, which needs kernel 3 and "
                             f"stride 1 (F(2x2, 3x3) tiles); got kernel {k}, stride {s}")

    def shift(i, o, k=1, s=1, p=0, dense=False):
        if dense:
            return ShiftLinear(i, o, mode=mode, prange=prange)
        return ShiftConv2d(i, o, k, stride=s, padding=p, mode=mode, prange=prange)

    def adder(i, o, k=1, s=1, p=0, dense=False):
        return AdderLinear(i, o, eta=eta) if dense else AdderConv2d(i, o, k, stride=s, padding=p,
                                                                    eta=eta)

    def layer(kind, i, o, k, s, p, dense):
        if kind == "conv":
            return nn.Linear(i, o, bias=False) if dense else nn.Conv2d(i, o, k, stride=s,
                                                                       padding=p, bias=False)
        if kind == "adder" or (kind == "winograd-adder" and dense):
            return adder(i, o, k, s, p, dense)
        if kind == "shift":
            return shift(i, o, k, s, p, dense)
        if kind == "shiftadd":
            return [shift(i, o, k, s, p, dense),
                    adder(o, o, add_kernel, 1, add_kernel // 2, dense)]
        return WinogradAdderConv2d(i, o, padding=p, eta=eta)

    blocks = iter(names[:-1])
    return _digits_net(lambda i, o, k, s, p: layer(next(blocks), i, o, k, s, p, False),
                       lambda i, o: layer(names[-1], i, o, 1, 1, 0, True), channels, in_channels,
                       input_size, num_classes, kernel, stride, padding)
