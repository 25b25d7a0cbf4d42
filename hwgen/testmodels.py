"""Test models: digits-shaped networks with random weights and calibrated requantization.

They run the golden model on calibration digits to pick requant parameters, so they live
outside :mod:`hwgen.hw` (hardware imports neither the golden model, the data, nor torch).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import golden, ir, quant
from .data import digits
from .nn.winograd import transform_set

__all__ = ["random_digits_model", "RANDOM_KINDS"]


def _csd_near(target: float, max_terms: int = 3) -> int:
    """The integer closest to ``target`` with at most ``max_terms`` canonical signed digits."""
    return quant.csd_round(int(round(target)), max_terms)


def _calibrated_requant(name, acc, out_lo, out_hi, *, relu, out_bits, shift=12, negative=True) -> ir.Requant:
    """Requant mapping each channel's 1st..99th percentile of ``acc`` onto ``[out_lo, out_hi]``.

    ``negative``: the multiplier is negative, as for an adder layer, whose output is
    ``-distance``: the most similar input (largest value, nearest 0) gives the smallest
    activation.  Any direction works for a test.  ``shift=None`` picks the smallest shift that
    leaves the smallest multiplier at least 128 (8 bits of scale).
    """
    axes = tuple(i for i in range(acc.ndim) if i != 1)
    lo = np.percentile(acc, 1, axis=axes)
    hi = np.percentile(acc, 99, axis=axes)
    span = np.maximum(hi - lo, 1)
    if shift is None:
        smallest = float(((out_hi - out_lo) / span).min())
        shift = min(40, max(0, int(np.ceil(np.log2(128 / smallest)))))
    mult, bias = [], []
    for ch in range(acc.shape[1]):
        scale = (out_hi - out_lo) / span[ch]
        if negative:
            m = -_csd_near(scale * (1 << shift))
            # y = (acc * m + bias) >> shift maps hi -> out_lo, lo -> out_hi (approximately).
            bias.append(int(round(out_lo * (1 << shift) - hi[ch] * m)))
        else:
            m = _csd_near(scale * (1 << shift))
            bias.append(int(round(out_lo * (1 << shift) - lo[ch] * m)))
        mult.append(m)
    return ir.Requant(name, mult=np.array(mult), bias=np.array(bias), shift=shift, out_bits=out_bits, relu=relu)


@dataclass(frozen=True)
class _Family:
    """The layer kinds of one family of :func:`random_digits_model`: ``conv`` and ``dense``
    (with ``conv_params`` for the convs), ``then`` an adder conv / dense pair after each (the
    ShiftAddNet blocks), ``shift`` the requantizers' shift (None: picked per layer),
    ``name`` the model's name (before the seed; default ``random-digits-<family>``)."""

    conv: type[ir.Layer]
    dense: type[ir.Layer]
    shift: int | None = None
    then: tuple[type[ir.Layer], type[ir.Layer]] | None = None
    winograd: bool = False
    name: str = ""


_FAMILIES = {
    "adder": _Family(ir.AdderConv2d, ir.AdderDense, shift=12, name="random-digits"),
    "shift": _Family(ir.ShiftConv2d, ir.ShiftDense),
    "conv": _Family(ir.Conv2d, ir.Dense),
    "shiftadd": _Family(ir.ShiftConv2d, ir.ShiftDense, then=(ir.AdderConv2d, ir.AdderDense)),
    "winograd-adder": _Family(ir.WinogradAdderConv2d, ir.AdderDense, winograd=True),
}

#: Families of :func:`random_digits_model`.
RANDOM_KINDS = tuple(_FAMILIES)


def random_digits_model(seed: int = 0, kind: str = "adder",
                        calibration: np.ndarray | None = None) -> ir.Model:
    """A digits-shaped network with random weights and calibrated requantization, for tests.

    Input 1×8×8, 8 bits; ``conv1`` (8×1×3×3, pad 1) → ``bn1`` → ``pool1`` → ``conv2``
    (16×8×3×3, pad 1) → ``bn2`` → ``pool2`` → ``flatten`` → ``fc`` (10×64) → ``bn3`` (16-bit
    signed scores), the layers of family ``kind``, each with its kind's random weights
    (``random`` in :mod:`hwgen.kinds`):

    ==================  ==========================================================================
    ``adder``           AdderNet: adder_conv2d / adder_dense, int8 weights (the default; unchanged);
    ``shift``           DeepShift: shift_conv2d / shift_dense, random sign in {-1, 0, 1} and shift
                        in [0, 7] (``max_shift=7``);
    ``conv``            the multiplier baseline: conv2d / dense, int8 weights;
    ``shiftadd``        ShiftAddNet: each shift layer followed by a signed requant (8 bits, no ReLU)
                        and an adder layer: a 1×1 ``adder_conv2d`` after each shift conv, an
                        ``adder_dense`` (10→10) after the shift dense.
    ``winograd-adder``  Winograd-AdderNet: the adder network with each conv a
                        ``winograd_adder_conv2d`` F(2×2, 3×3) (the ``standard`` transform set of
                        :mod:`hwgen.nn.winograd`, pad 1) with random ``u`` in [-600, 900): inside
                        the ``V`` range of 8-bit input tiles, [-510, 1020], as most of the shipped
                        model's ``u`` are; the dense stays ``adder_dense``.
    ==================  ==========================================================================

    ``calibration``: integer images ``(N, 1, 8, 8)`` used to choose requant parameters so
    activations spread over their range; defaults to 64 training digits quantized as
    ``round(x * 255)``.
    """
    if kind not in _FAMILIES:
        raise ValueError(f"kind must be one of {', '.join(RANDOM_KINDS)}, not {kind!r}")
    family = _FAMILIES[kind]
    rng = np.random.default_rng(seed)
    if calibration is None:
        calibration = np.round(digits()[0][:64] * 255).astype(np.int64)
    x = np.asarray(calibration, dtype=np.int64)

    layers = []

    def add(layer):
        nonlocal x
        layers.append(layer)
        x = golden.execute(layer, x)

    def requant(name, out_lo, out_hi, *, relu, out_bits, shift=family.shift):
        add(_calibrated_requant(name, x, out_lo, out_hi, relu=relu, out_bits=out_bits,
                                shift=shift, negative=layers[-1].negated))

    conv_params = {"padding": 1}
    if family.winograd:
        t = transform_set("standard")
        conv_params.update((k, t[k].numpy().astype(np.int64)) for k in ("bt", "at"))
    for i, (o, c) in enumerate([(8, 1), (16, 8)], start=1):
        add(family.conv.random(rng, f"conv{i}", (o, c, 3, 3), **conv_params))
        if family.then:
            requant(f"bn{i}a", -128, 127, relu=False, out_bits=8)
            add(family.then[0].random(rng, f"conv{i}b", (o, o, 1, 1)))
        requant(f"bn{i}", 0, 255, relu=True, out_bits=8)
        add(ir.MaxPool2d(f"pool{i}", size=2))
    add(ir.Flatten("flatten"))
    add(family.dense.random(rng, "fc", (10, 64)))
    if family.then:
        requant("bn3a", -128, 127, relu=False, out_bits=8)
        add(family.then[1].random(rng, "fc2", (10, 10)))
    requant("bn3", -2000, 2000, relu=False, out_bits=16)
    name = family.name or f"random-digits-{kind}"
    return ir.Model(name=f"{name}-{seed}", input_shape=(1, 8, 8), input_bits=8, input_scale=1 / 255,
                    layers=layers, classes=[str(i) for i in range(10)])
