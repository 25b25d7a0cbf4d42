"""Per-channel requantization by shift-and-add: no multiplier."""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Shape, Signal
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
    """``y = clamp((a * mult[c] + bias[c]) >> shift, lo, hi)`` for one channel at a time, sequential.

    ``a`` is the accumulator: ``a = x`` or, with ``negate``, ``a = -x`` (the l1 PE delivers the
    magnitude ``x = Σ|x - w|`` of ``a = -x``; the negation is folded into the signs of the
    digits, so it costs nothing).  ``mult[c]`` is split into canonical signed digits
    (:func:`hwgen.ir.csd`), at most ``requant.max_terms``.  One shifter and one adder serve
    all digits: the value accepted adds ``bias[c] ± (x << p_0)``, each following cycle one more
    digit ``± (x << p_k)`` (a channel with fewer digits adds zeros), so a value takes ``slots``
    cycles.  When the unit serves one channel with one digit the shift is a constant (wires);
    otherwise a small constant table (sign and power per channel and slot, bias per channel)
    drives the shifter.

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
    slots : int, optional
        Cycles per value, at least (and by default) the most digits of a served channel; units
        working side by side take the same so that they stay in step.

    Members
    -------
    en : ``In(1)``
        Clock enable (nothing moves while low).
    valid : ``In(1)``, sel : ``In(range(len(channels)))``, x : ``In(bits_for(*in_range))``
        A value to requantize; taken in an enabled cycle with ``ready`` high.  ``x`` and ``sel``
        are read in that cycle only.
    ready : ``Out(1)``
        Combinational from the unit's state: low for the ``slots - 1`` cycles after a value is
        taken (the digits still being added).
    y : ``Out(requant_shape(requant))``, y_valid : ``Out(1)``, y_sel : ``Out(range(len(channels)))``
        The result and its ``sel``; ``y`` is combinational from the sum register and holds while
        ``en`` is low; ``y_valid`` is high for one enabled cycle.

    Widths
    ------
    Terms: the exact union over the served channels of ``±(x << p)``; the sum register exactly
    the union of every partial sum (bias plus the first ``k`` digits) over the served channels;
    ``y``: ``out_bits``.

    Latency
    -------
    ``y_valid`` ``latency = slots`` enabled cycles after the value is taken; one value per
    ``slots`` enabled cycles (``slots`` = most digits of a served channel, at most
    ``max_terms``).
    """

    def __init__(self, requant: ir.Requant, channels, in_range: tuple[int, int], *, negate: bool = False,
                 slots: int | None = None):
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
        sgn = -1 if negate else 1
        # Digits in terms of x: (sign, power) with the negation folded into sign.
        self.digits = [[(sgn * s, p) for s, p in ir.csd(int(requant.mult[c]))] for c in channels]
        need = max(1, max(len(d) for d in self.digits))
        if need > requant.max_terms:
            raise ValueError(f"{requant.name}: a multiplier needs {need} digits > max_terms")
        if slots is not None and (not isinstance(slots, int) or slots < need):
            raise ValueError(f"slots={slots!r} must be an integer of at least {need}, the most digits "
                             f"of a served channel")
        self.slots = need if slots is None else slots
        self.latency = self.slots
        self.biases = [int(requant.bias[c]) for c in channels]
        self.max_power = max((p for d in self.digits for _, p in d), default=0)
        # Every partial sum bias + Σ_{i<k} digit_i * x is linear in x: its ends bound it.
        p_lo = p_hi = 0
        for d, b in zip(self.digits, self.biases):
            for k in range(1, len(d) + 1):
                m = sum(s << p for s, p in d[:k])
                ends = (b + m * lo, b + m * hi)
                p_lo, p_hi = min(p_lo, *ends), max(p_hi, *ends)
            p_lo, p_hi = min(p_lo, b), max(p_hi, b)
        self.sum_range = (p_lo, p_hi)
        self.sum_shape = _shape(*self.sum_range)
        self.bias_shape = _shape(min(self.biases + [0]), max(self.biases + [0]))
        sh = requant.shift
        self.shifted_range = (self.sum_range[0] >> sh, self.sum_range[1] >> sh)
        self.shifted_shape = _shape(*self.shifted_range)
        self.y_shape = requant_shape(requant)
        super().__init__({
            "en": In(1), "valid": In(1), "sel": In(range(len(channels))), "x": In(self.x_shape),
            "ready": Out(1),
            "y": Out(self.y_shape), "y_valid": Out(1), "y_sel": Out(range(len(channels))),
        })

    def elaborate(self, platform):
        m = Module()
        en, rq, slots = self.en, self.requant, self.slots

        k = Signal(range(slots))     # digit added this cycle while busy (0: idle)
        x_q = Signal(self.x_shape)   # the value, for digits 1..slots-1
        sel = self.y_sel             # the channel being requantized, held until the next one
        take = Signal()
        m.d.comb += [self.ready.eq(k == 0), take.eq(en & self.valid & self.ready)]

        # The digit of this cycle: the new value's first, or digit k of the held one.
        cur_sel = Signal.like(sel)
        m.d.comb += cur_sel.eq(Mux(k == 0, self.sel, sel))
        xv = Mux(k == 0, self.x, x_q) if slots > 1 else self.x
        nz, neg = Signal(), Signal()
        power = Signal(range(self.max_power + 1))
        bias = Signal(self.bias_shape)
        table = {(j, i): d for j, ds in enumerate(self.digits) for i, d in enumerate(ds)}
        with m.Switch(Cat(k, cur_sel) if slots > 1 else cur_sel):
            for j in range(len(self.channels)):
                for i in range(slots):
                    if (j, i) in table:
                        s, p = table[j, i]
                        with m.Case(j * (1 << len(k)) + i if slots > 1 else j):
                            m.d.comb += [nz.eq(1), neg.eq(s < 0), power.eq(p)]
        with m.Switch(cur_sel):
            for j, b in enumerate(self.biases):
                with m.Case(j):
                    m.d.comb += bias.eq(b)
        # ± (x << p) with one adder: -t = ~t + 1, the +1 as the carry in.
        xg = Signal(self.x_shape)
        m.d.comb += xg.eq(Mux(nz, xv, 0))
        # Signed, so that ~shifted is -shifted - 1.
        shifted = Signal(Shape(self.x_shape.width + self.max_power + (not self.x_shape.signed), True))
        m.d.comb += shifted.eq(xg << power)
        term = Signal.like(shifted)
        m.d.comb += term.eq(Mux(neg, ~shifted, shifted))
        total = Signal(self.sum_shape)
        base = Mux(k == 0, bias, total)
        with m.If(en):
            m.d.sync += self.y_valid.eq(0)
            with m.If(take | (k != 0)):
                m.d.sync += total.eq(base + term + neg)
                if slots > 1:
                    m.d.sync += k.eq(Mux(k == slots - 1, 0, k + 1))
                m.d.sync += self.y_valid.eq(k == slots - 1)
            with m.If(take):
                m.d.sync += sel.eq(self.sel)
                if slots > 1:
                    m.d.sync += x_q.eq(self.x)

        # Arithmetic shift right by a constant, then clamp: wires and two compares.
        shifted_total = Signal(self.shifted_shape)
        m.d.comb += shifted_total.eq(total >> rq.shift)
        c_lo, c_hi = rq.clamp
        s_lo, s_hi = self.shifted_range
        clamped = shifted_total
        if s_hi > c_hi:
            clamped = Mux(shifted_total > c_hi, c_hi, clamped)
        if s_lo < c_lo:
            clamped = Mux(shifted_total < c_lo, c_lo, clamped)
        m.d.comb += self.y.eq(clamped)
        return m
