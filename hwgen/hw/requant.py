"""Per-channel requantization by shift-and-add: no multiplier."""

from __future__ import annotations

from amaranth import Module, Mux, Shape, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .. import ir

__all__ = ["Requant", "requant_shape"]


def _shape(lo: int, hi: int) -> Shape:
    width, is_signed = ir.bits_for(lo, hi)
    return Shape(width, is_signed)


def requant_shape(requant: ir.Requant) -> Shape:
    """Element shape of the requantized output: ``unsigned(out_bits)`` with ReLU, else signed."""
    return Shape(requant.out_bits, not requant.relu)


class Requant(wiring.Component):
    """``y = clamp((a * mult[c] + bias[c]) >> shift, lo, hi)`` for one channel at a time.

    ``a`` is the accumulator: ``a = x`` or, with ``negate``, ``a = -x`` (the l1 PE delivers the
    magnitude ``x = Σ|x - w|`` of ``a = -x``; the negation is folded into the signs of the
    digits, so it costs nothing).  ``mult[c]`` is split into canonical signed digits
    (:func:`hwgen.ir.csd`), at most ``requant.max_terms``; digit slot ``i`` of every channel
    is one shifter and a conditional negate.  When the unit serves one channel the shifts are
    constants (wires); otherwise ``sel`` picks the channel and the unit holds a constant
    table (sign, power of every slot and the bias per channel) feeding barrel shifters.

    Parameters
    ----------
    requant : :class:`hwgen.ir.Requant`
        The layer (``mult``, ``bias``, ``shift``, clamp).
    channels : list of int
        The channels this unit serves; ``sel = j`` selects ``channels[j]``.
    in_range : (int, int)
        Exact interval of the input ``x``.
    negate : bool
        Requantize ``-x`` instead of ``x``.

    Members
    -------
    en : ``In(1)``           clock enable of the pipeline (nothing moves while low).
    valid : ``In(1)``, sel : ``In(range(len(channels)))``, x : ``In(bits_for(*in_range))``
    y : ``Out(requant_shape(requant))``, y_valid : ``Out(1)``

    Widths
    ------
    Terms: the exact union over the served channels of ``±(x << p)``; the sum (terms plus
    bias) exactly :meth:`hwgen.ir.Requant.sum_range` over the served channels; ``y``:
    ``out_bits``.

    Latency
    -------
    ``latency = 3`` enabled cycles (shift/negate, sum + bias, shift right + clamp), one
    value per cycle.
    """

    latency = 3

    def __init__(self, requant: ir.Requant, channels, in_range: tuple[int, int], *, negate: bool = False):
        if not isinstance(requant, ir.Requant):
            raise TypeError(f"requant must be an hwgen.ir.Requant, not {type(requant).__name__}")
        channels = [int(c) for c in channels]
        if not channels or not all(0 <= c < len(requant.mult) for c in channels):
            raise ValueError(f"channels must be a non-empty list of indices below {len(requant.mult)}, "
                             f"got {channels}")
        lo, hi = (int(v) for v in in_range)
        if lo > hi:
            raise ValueError(f"empty in_range {in_range}")
        self.requant, self.channels, self.negate = requant, channels, bool(negate)
        self.in_range = (lo, hi)
        self.x_shape = _shape(lo, hi)
        a_lo, a_hi = (-hi, -lo) if negate else (lo, hi)
        sgn = -1 if negate else 1
        # Digits in terms of x: (sign, power) with the negation folded into sign.
        self.digits = [[(sgn * s, p) for s, p in ir.csd(int(requant.mult[c]))] for c in channels]
        self.slots = max(len(d) for d in self.digits)
        if self.slots > requant.max_terms:
            raise ValueError(f"{requant.name}: a multiplier needs {self.slots} digits > max_terms")
        self.biases = [int(requant.bias[c]) for c in channels]
        term_lo = term_hi = 0
        for d in self.digits:
            for s, p in d:
                ends = (s * (lo << p), s * (hi << p))
                term_lo, term_hi = min(term_lo, *ends), max(term_hi, *ends)
        self.term_shape = _shape(term_lo, term_hi)
        self.max_power = max((p for d in self.digits for _, p in d), default=0)
        sums = [int(requant.mult[c]) * a + b for c, b in zip(channels, self.biases) for a in (a_lo, a_hi)]
        self.sum_range = (min(sums), max(sums))
        self.sum_shape = _shape(*self.sum_range)
        self.bias_shape = _shape(min(self.biases + [0]), max(self.biases + [0]))
        sh = requant.shift
        self.shifted_range = (self.sum_range[0] >> sh, self.sum_range[1] >> sh)
        self.shifted_shape = _shape(*self.shifted_range)
        self.y_shape = requant_shape(requant)
        super().__init__({
            "en": In(1), "valid": In(1), "sel": In(range(len(channels))), "x": In(self.x_shape),
            "y": Out(self.y_shape), "y_valid": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        en = self.en
        rq = self.requant
        x = self.x

        # Stage 1: terms ±(x << p) and the bias.
        terms = [Signal(self.term_shape, name=f"term{i}") for i in range(self.slots)]
        bias = Signal(self.bias_shape)
        if len(self.channels) == 1:
            with m.If(en):
                for i, (s, p) in enumerate(self.digits[0]):
                    m.d.sync += terms[i].eq(-(x << p) if s < 0 else (x << p))
                for i in range(len(self.digits[0]), self.slots):
                    m.d.sync += terms[i].eq(0)
                m.d.sync += bias.eq(self.biases[0])
        else:
            for i in range(self.slots):
                nz = Signal(name=f"nz{i}")
                neg = Signal(name=f"neg{i}")
                power = Signal(range(self.max_power + 1), name=f"pow{i}")
                with m.Switch(self.sel):
                    for j, d in enumerate(self.digits):
                        with m.Case(j):
                            if i < len(d):
                                s, p = d[i]
                                m.d.comb += [nz.eq(1), neg.eq(s < 0), power.eq(p)]
                shifted = Signal(Shape(self.x_shape.width + self.max_power, self.x_shape.signed),
                                 name=f"shifted{i}")
                m.d.comb += shifted.eq(x << power)
                with m.If(en):
                    m.d.sync += terms[i].eq(Mux(nz, Mux(neg, -shifted, shifted), 0))
            bias_sel = Signal(self.bias_shape)
            with m.Switch(self.sel):
                for j, b in enumerate(self.biases):
                    with m.Case(j):
                        m.d.comb += bias_sel.eq(b)
            with m.If(en):
                m.d.sync += bias.eq(bias_sel)

        # Stage 2: the sum (exact width: sum_range).
        total = Signal(self.sum_shape)
        expr = bias
        for t in terms:
            expr = expr + t
        with m.If(en):
            m.d.sync += total.eq(expr)

        # Stage 3: arithmetic shift right by a constant, then clamp.
        shifted = Signal(self.shifted_shape)
        m.d.comb += shifted.eq(total >> rq.shift)
        c_lo, c_hi = rq.clamp
        s_lo, s_hi = self.shifted_range
        clamped = shifted
        if s_hi > c_hi:
            clamped = Mux(shifted > c_hi, c_hi, clamped)
        if s_lo < c_lo:
            clamped = Mux(shifted < c_lo, c_lo, clamped)
        with m.If(en):
            m.d.sync += self.y.eq(clamped)

        v1, v2 = Signal(), Signal()
        with m.If(en):
            m.d.sync += [v1.eq(self.valid), v2.eq(v1), self.y_valid.eq(v2)]
        return m
