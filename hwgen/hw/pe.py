"""The l1 processing element of AdderNet layers: ``Σ |x - w|`` over ``simd`` lanes, folded in time."""

from __future__ import annotations

from amaranth import Module, Shape, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .. import ir

__all__ = ["L1PE", "lane_max"]


def lane_max(x_range: tuple[int, int], w_range: tuple[int, int]) -> int:
    """Largest ``|x - w|`` for ``x`` in ``x_range`` and ``w`` in ``w_range``."""
    (xlo, xhi), (wlo, whi) = x_range, w_range
    return max(abs(xhi - wlo), abs(xlo - whi), 0)


class L1PE(wiring.Component):
    """``simd`` lanes of subtract and absolute value, a pipelined adder tree and an accumulator.

    Computes the magnitude ``mag = Σ_k |x_k - w_k|`` of one output value over ``steps``
    consecutive beats of ``simd`` taps; the AdderNet output is ``y = -mag``.  The negation is
    never built: :class:`hwgen.hw.requant.Requant` takes ``mag`` and negates its shift-and-add
    digits instead, which is free.

    Parameters
    ----------
    simd : int
        Lanes: taps consumed per beat.
    x_range, w_range : (int, int)
        Exact intervals of the inputs (including the 0 of zero padding) and of the weights;
        they set the element shapes (:func:`hwgen.ir.bits_for`) and every width below.
    acc_max : int
        Largest possible ``mag`` of a complete output value, i.e. ``-out_range(...)[0]`` of the
        layer (:meth:`hwgen.ir.AdderConv2d.out_range`). Every partial sum of non-negative terms
        is bounded by it, so it bounds the tree levels and the accumulator alike.

    Members
    -------
    en : ``In(1)``
        Clock enable of the whole pipeline (the engine's stall): nothing moves while low.
    valid, first, last : ``In(1)``
        The beat carries taps; it is the first / last beat of an output value.
    x : ``In(ArrayLayout(x_shape, simd))``, w : ``In(ArrayLayout(w_shape, simd))``
        The taps and their weights.
    mag : ``Out(unsigned(bits_for(0, acc_max)))``, mag_valid : ``Out(1)``
        The complete magnitude, valid for one enabled cycle after the last beat's sum.

    Widths
    ------
    Lane difference ``x - w``: ``bits_for(xlo - whi, xhi - wlo)``; after the absolute value
    ``bits_for(0, lane_max)``; tree level ``l`` (``2**l`` lanes summed):
    ``bits_for(0, min(2**l * lane_max, acc_max))``; accumulator ``bits_for(0, acc_max)``.

    Latency
    -------
    ``latency = 2 + ceil(log2(simd))`` enabled cycles from the last beat to ``mag_valid``:
    one register after the absolute values, one per adder-tree level, one accumulator.
    Throughput: one beat per cycle.
    """

    def __init__(self, simd: int, x_range: tuple[int, int], w_range: tuple[int, int], acc_max: int):
        if not isinstance(simd, int) or simd < 1:
            raise TypeError(f"simd must be a positive integer, not {simd!r}")
        xlo, xhi = (int(v) for v in x_range)
        wlo, whi = (int(v) for v in w_range)
        if xlo > xhi or wlo > whi:
            raise ValueError(f"empty range: x {x_range}, w {w_range}")
        self.simd = simd
        self.x_range, self.w_range = (xlo, xhi), (wlo, whi)
        self.lane_max = lane_max(self.x_range, self.w_range)
        self.acc_max = int(acc_max)
        if self.acc_max < 0:
            raise ValueError(f"acc_max must be >= 0, not {acc_max}")
        self.x_shape = _shape(xlo, xhi)
        self.w_shape = _shape(wlo, whi)
        self.diff_shape = _shape(xlo - whi, xhi - wlo)
        self.levels = max(0, (simd - 1).bit_length())
        self.acc_shape = _shape(0, self.acc_max)
        self.latency = 2 + self.levels
        super().__init__({
            "en": In(1), "valid": In(1), "first": In(1), "last": In(1),
            "x": In(data.ArrayLayout(self.x_shape, simd)),
            "w": In(data.ArrayLayout(self.w_shape, simd)),
            "mag": Out(self.acc_shape), "mag_valid": Out(1),
        })

    def _level_shape(self, lanes: int) -> Shape:
        # A sum of lanes is a partial sum of one output's non-negative terms: <= acc_max.
        return _shape(0, min(lanes * self.lane_max, self.acc_max))

    def elaborate(self, platform):
        m = Module()
        en = self.en

        # Stage 0: |x - w| per lane, registered.
        level = []
        for k in range(self.simd):
            diff = Signal(self.diff_shape, name=f"diff{k}")
            m.d.comb += diff.eq(self.x[k] - self.w[k])
            a = Signal(self._level_shape(1), name=f"abs{k}")
            with m.If(en):
                m.d.sync += a.eq(abs(diff))
            level.append((a, 1))
        tags = self._delay(m, [self.valid, self.first, self.last], "s0")

        # Adder tree, one register per level.
        for lv in range(self.levels):
            nxt = []
            for j in range(0, len(level), 2):
                if j + 1 < len(level):
                    (a, na), (b, nb) = level[j], level[j + 1]
                    s = Signal(self._level_shape(na + nb), name=f"t{lv}_{j // 2}")
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
            m.d.sync += self.mag_valid.eq(valid & last)
        m.d.comb += self.mag.eq(acc)
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


def _shape(lo: int, hi: int) -> Shape:
    width, is_signed = ir.bits_for(lo, hi)
    return Shape(width, is_signed)
