"""Processing elements of the conv / dense engines: ``simd`` lanes, one shared adder tree.

A lane turns one input tap ``x`` and its weight word into a term; :class:`PE` sums ``simd``
terms per beat in a pipelined adder tree and accumulates the beats of one output value.
The lane is one of (:class:`Lane`):

=========  ================================================================================
``l1``     AdderNet: ``|x - w|``, the magnitude (the layer's ``-Σ|x - w|`` is negated for
           free by the requantizer, :class:`hwgen.hw.requant.Requant` with ``negate``);
``shift``  DeepShift: ``sign * (x << shift)``, a logarithmic barrel shifter driven at run
           time by the weight word's shift code, a conditional negate and a zero for sign 0;
``mac``    the multiplier baseline: ``x * w`` (Amaranth ``*``; Yosys maps it to DSPs or LUTs).
=========  ================================================================================
"""

from __future__ import annotations

from amaranth import Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .. import ir
from .spec import LaneOp

__all__ = ["Lane", "PE", "L1PE", "lane_max", "LANE_OPS"]

#: The lane operations, by the ``arithmetic`` they implement.
LANE_OPS = tuple(op.value for op in LaneOp)


def lane_max(x_range: tuple[int, int], w_range: tuple[int, int]) -> int:
    """Largest ``|x - w|`` for ``x`` in ``x_range`` and ``w`` in ``w_range``."""
    (xlo, xhi), (wlo, whi) = x_range, w_range
    return max(abs(xhi - wlo), abs(xlo - whi), 0)


def _shape(lo: int, hi: int) -> Shape:
    width, is_signed = ir.bits_for(lo, hi)
    return Shape(width, is_signed)


def _product_range(x_range, w_range) -> tuple[int, int]:
    # x * w is bilinear: its extremes over a box are at the corners.
    corners = [x * w for x in x_range for w in w_range]
    return min(corners), max(corners)


class Lane:
    """One lane operation: its operand shapes, weight-word encoding and exact term range.

    Plain Python (no hardware of its own): :class:`PE` builds ``simd`` of them, and the
    engines use :meth:`encode` to fill their weight ROMs or constant tables.

    Parameters
    ----------
    op : ``"l1"``, ``"shift"`` or ``"mac"``
    x_range : (int, int)
        Exact interval of the inputs (zero padding included); signed or unsigned.
    w_range : (int, int)
        Exact interval of the (effective) weights.  For ``shift`` the weights are
        ``sign << shift``; optional there (default ``±2**max_shift``).
    max_shift : int
        ``shift`` only: the largest exponent; the barrel shifter has
        ``max_shift.bit_length()`` stages.

    Attributes
    ----------
    x_shape : Shape
        ``bits_for(*x_range)``.
    w_layout : ShapeLike
        One lane's weight word: ``bits_for(*w_range)`` for ``l1`` and ``mac``;
        ``StructLayout({"shift": unsigned(max(1, max_shift.bit_length())), "sign": signed(2)})``
        for ``shift`` (the sign as a 2-bit two's-complement number, -1, 0 or +1).
    term_range : (int, int)
        Exact interval of the lane's term: ``(0, lane_max)`` for ``l1``; for ``shift`` and
        ``mac`` the corners of ``x * w`` over ``x_range × w_range`` (``x * w`` is bilinear, and
        every ``sign << shift`` lies in ``w_range``).
    """

    def __init__(self, op: str, x_range: tuple[int, int], w_range: tuple[int, int] | None = None, *,
                 max_shift: int | None = None):
        if op not in LANE_OPS:
            raise ValueError(f"lane op must be one of {', '.join(LANE_OPS)}, not {op!r}")
        xlo, xhi = (int(v) for v in x_range)
        if xlo > xhi:
            raise ValueError(f"empty x range {x_range}")
        self.op = op = LaneOp(op)
        self.x_range = (xlo, xhi)
        self.x_shape = _shape(xlo, xhi)
        if op is LaneOp.SHIFT:
            if isinstance(max_shift, bool) or not isinstance(max_shift, int) or not 0 <= max_shift <= 30:
                raise ValueError(f"a shift lane needs max_shift, an integer in [0, 30], not {max_shift!r}")
            self.max_shift = max_shift
            if w_range is None:
                w_range = (-(1 << max_shift), 1 << max_shift)
        elif max_shift is not None:
            raise ValueError(f"max_shift applies to shift lanes only, not {op.value!r}")
        else:
            self.max_shift = None
        if w_range is None:
            raise ValueError(f"a {op.value} lane needs w_range")
        wlo, whi = (int(v) for v in w_range)
        if wlo > whi:
            raise ValueError(f"empty w range {w_range}")
        self.w_range = (wlo, whi)
        if op is LaneOp.L1:
            self.lane_max = lane_max(self.x_range, self.w_range)
            self.term_range = (0, self.lane_max)
            self.w_layout = _shape(wlo, whi)
            self.diff_shape = _shape(xlo - whi, xhi - wlo)
        elif op is LaneOp.MAC:
            self.term_range = _product_range(self.x_range, self.w_range)
            self.w_layout = _shape(wlo, whi)
        else:
            top = 1 << self.max_shift
            if wlo < -top or whi > top:
                raise ValueError(f"w range {w_range} exceeds ±2**max_shift = ±{top}")
            self.stages = self.max_shift.bit_length()
            self.term_range = _product_range(self.x_range, self.w_range)
            self.w_layout = data.StructLayout({"shift": unsigned(max(1, self.stages)), "sign": signed(2)})
        self.term_shape = _shape(*self.term_range)

    @property
    def w_width(self) -> int:
        """Bits of one lane's weight word."""
        return Shape.cast(self.w_layout).width

    def encode(self, weight) -> int:
        """The raw weight word (``w_width`` bits) of ``weight``: an int for ``l1``/``mac``, a
        ``(sign, shift)`` pair for ``shift`` (the shift of a sign-0 weight is ignored)."""
        if self.op is LaneOp.SHIFT:
            sign, shift = (int(v) for v in weight)
            if sign not in (-1, 0, 1) or (sign and not 0 <= shift <= self.max_shift):
                raise ValueError(f"shift weight (sign {sign}, shift {shift}) outside sign in {{-1, 0, 1}}, "
                                 f"shift in [0, {self.max_shift}]")
            code = shift if sign else 0
            return code | ((sign & 3) << Shape.cast(self.w_layout).width - 2)
        w = int(weight)
        if not self.w_range[0] <= w <= self.w_range[1]:
            raise ValueError(f"weight {w} outside w_range {self.w_range}")
        return w & ((1 << self.w_width) - 1)

    def term(self, m: Module, x, w, name: str):
        """Add the combinational logic of one lane to ``m``; returns the term (``term_shape``)."""
        t = Signal(self.term_shape, name=f"{name}_term")
        if self.op is LaneOp.L1:
            diff = Signal(self.diff_shape, name=f"{name}_diff")
            m.d.comb += [diff.eq(x - w), t.eq(abs(diff))]
        elif self.op is LaneOp.MAC:
            m.d.comb += t.eq(x * w)
        else:
            xlo, xhi = self.x_range
            # Zero for sign 0 on the narrow input, before the shifter widens it.
            v = Signal(self.x_shape, name=f"{name}_x")
            m.d.comb += v.eq(Mux(w.sign == 0, 0, x))
            # Stage j shifts by 2**j when bit j of the code is set; after it the shift so far is
            # at most min(max_shift, 2**(j+1) - 1), which sizes the stage exactly.
            for j in range(self.stages):
                reach = min(self.max_shift, (1 << (j + 1)) - 1)
                nv = Signal(_shape(min(xlo, xlo << reach), max(xhi, xhi << reach)), name=f"{name}_sh{j}")
                m.d.comb += nv.eq(Mux(w.shift[j], v << (1 << j), v))
                v = nv
            if self.w_range[0] < 0:
                # The negation of the most negative x << max_shift needs one more bit: -v is
                # one bit wider than v, and term_shape holds the result (the corner -x*w).
                m.d.comb += t.eq(Mux(w.sign[1], -v, v))
            else:
                m.d.comb += t.eq(v)
        return t


class PE(wiring.Component):
    """``simd`` lanes, a pipelined adder tree and an accumulator.

    Computes ``acc = Σ_k term(x_k, w_k)`` of one output value over ``steps`` consecutive beats
    of ``simd`` taps, ``term`` the :class:`Lane` operation: the magnitude ``Σ|x - w|`` for
    ``l1`` (the AdderNet output is ``-acc``, negated for free by the requantizer), the signed
    sum for ``shift`` and ``mac``.  The tree and the accumulator are the same for every lane.

    Parameters
    ----------
    lane : :class:`Lane`
        The lane operation, its input and weight ranges.
    simd : int
        Lanes: taps consumed per beat.
    acc_range : (int, int)
        Bound on every partial sum of one output value's terms (the subset-sum bound
        ``Σ_k min(0, tmin_k) .. Σ_k max(0, tmax_k)``, over the outputs, ``[tmin_k, tmax_k]`` the
        range of term ``k``); it bounds the tree levels and the accumulator alike.

    Members
    -------
    en : ``In(1)``
        Clock enable of the whole pipeline (the engine's stall): nothing moves while low.
    valid, first, last : ``In(1)``
        The beat carries taps; it is the first / last beat of an output value.
    x : ``In(ArrayLayout(lane.x_shape, simd))``, w : ``In(ArrayLayout(lane.w_layout, simd))``
        The taps and their weight words (:meth:`Lane.encode`).
    acc : ``Out(bits_for(*acc_range))``, acc_valid : ``Out(1)``
        The complete sum, valid for one enabled cycle after the last beat's sum; it holds
        until the next value's first beat reaches the accumulator.

    Widths
    ------
    Lane term: ``bits_for(*lane.term_range)``; tree level ``l`` (``2**l`` lanes summed):
    ``bits_for(max(2**l * tlo, acc_lo), min(2**l * thi, acc_hi))``; accumulator
    ``bits_for(*acc_range)``.

    Latency
    -------
    ``latency = 2 + ceil(log2(simd))`` enabled cycles from the last beat to ``acc_valid``:
    one register after the lanes, one per adder-tree level, one accumulator.
    Throughput: one beat per cycle.
    """

    def __init__(self, lane: Lane, simd: int, acc_range: tuple[int, int]):
        if not isinstance(lane, Lane):
            raise TypeError(f"lane must be an hwgen.hw.pe.Lane, not {type(lane).__name__}")
        if not isinstance(simd, int) or isinstance(simd, bool) or simd < 1:
            raise TypeError(f"simd must be a positive integer, not {simd!r}")
        lo, hi = (int(v) for v in acc_range)
        if lo > hi or lo > 0 or hi < 0:
            raise ValueError(f"acc_range {acc_range} must be a non-empty interval holding 0 "
                             f"(it bounds every partial sum, the empty one included)")
        self.lane, self.simd = lane, simd
        self.acc_range = (lo, hi)
        self.x_shape = lane.x_shape
        self.acc_shape = _shape(lo, hi)
        self.levels = max(0, (simd - 1).bit_length())
        self.latency = 2 + self.levels
        super().__init__({
            "en": In(1), "valid": In(1), "first": In(1), "last": In(1),
            "x": In(data.ArrayLayout(lane.x_shape, simd)),
            "w": In(data.ArrayLayout(lane.w_layout, simd)),
            "acc": Out(self.acc_shape), "acc_valid": Out(1),
        })

    def level_range(self, lanes: int) -> tuple[int, int]:
        """Exact interval of a sum of ``lanes`` terms: ``lanes`` times the term range, and a
        partial sum of one output's terms, so within ``acc_range``."""
        tlo, thi = self.lane.term_range
        return max(lanes * tlo, self.acc_range[0]), min(lanes * thi, self.acc_range[1])

    def elaborate(self, platform):
        m = Module()
        en = self.en

        # Stage 0: the lane terms, registered.
        level = []
        for k in range(self.simd):
            t = self.lane.term(m, self.x[k], self.w[k], f"lane{k}")
            r = Signal(_shape(*self.level_range(1)), name=f"term{k}")
            with m.If(en):
                m.d.sync += r.eq(t)
            level.append((r, 1))
        tags = self._delay(m, [self.valid, self.first, self.last], "s0")

        # Adder tree, one register per level.
        for lv in range(self.levels):
            nxt = []
            for j in range(0, len(level), 2):
                if j + 1 < len(level):
                    (a, na), (b, nb) = level[j], level[j + 1]
                    s = Signal(_shape(*self.level_range(na + nb)), name=f"t{lv}_{j // 2}")
                    with m.If(en):
                        m.d.sync += s.eq(a + b)
                    nxt.append((s, na + nb))
                else:
                    a, na = level[j]
                    s = Signal(a.shape(), name=f"t{lv}_{j // 2}")
                    with m.If(en):
                        m.d.sync += s.eq(a)
                    nxt.append((s, na))
            level = nxt
            tags = self._delay(m, tags, f"t{lv}")
        (total, _), = level
        valid, first, last = tags

        # Accumulator: restarts on the first beat, reports after the last.
        acc = Signal(self.acc_shape)
        with m.If(en & valid):
            with m.If(first):
                m.d.sync += acc.eq(total)
            with m.Else():
                m.d.sync += acc.eq(acc + total)
        with m.If(en):
            m.d.sync += self.acc_valid.eq(valid & last)
        m.d.comb += self.acc.eq(acc)
        return m

    def _delay(self, m, sigs, name):
        """One enabled register stage for the beat's tags (valid, first, last)."""
        out = []
        for i, s in enumerate(sigs):
            r = Signal(s.shape(), name=f"{name}_tag{i}")
            with m.If(self.en):
                m.d.sync += r.eq(s)
            out.append(r)
        return out


class L1PE(PE):
    """The l1 PE of AdderNet layers: ``PE(Lane("l1", x_range, w_range), simd, (0, acc_max))``.

    ``acc_max`` is the largest magnitude ``Σ|x - w|`` of an output value
    (``-out_range(...)[0]`` of the layer); ``mag``/``mag_valid`` name ``acc``/``acc_valid``.
    Widths: lane difference ``bits_for(xlo - whi, xhi - wlo)``, after the absolute value
    ``bits_for(0, lane_max)``; latency as :class:`PE`.
    """

    def __init__(self, simd: int, x_range: tuple[int, int], w_range: tuple[int, int], acc_max: int):
        if int(acc_max) < 0:
            raise ValueError(f"acc_max must be >= 0, not {acc_max}")
        if not isinstance(simd, int) or isinstance(simd, bool) or simd < 1:
            raise TypeError(f"simd must be a positive integer, not {simd!r}")
        lane = Lane("l1", x_range, w_range)
        self.x_range, self.w_range = lane.x_range, lane.w_range
        self.lane_max = lane.lane_max
        self.acc_max = int(acc_max)
        self.w_shape = lane.w_layout
        self.diff_shape = lane.diff_shape
        super().__init__(lane, simd, (0, self.acc_max))

    @property
    def mag(self):
        return self.acc

    @property
    def mag_valid(self):
        return self.acc_valid
