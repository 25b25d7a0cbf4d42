"""The input transform of the Winograd tile engine: ``V = bt · d · btᵀ`` with adders only,
a column of the tile as it arrives, then a row of ``V`` per cycle."""

from __future__ import annotations

import numpy as np
from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from . import constructing, elem_shape
from .winograd_buffer import column_signature

__all__ = ["InputTransform", "row_signature", "lincomb", "lincomb_range", "transform_ranges",
           "small_matrix"]


def lincomb_range(coefs, ranges) -> tuple[int, int]:
    """Exact interval of ``Σ coefs[k] · x_k`` for ``x_k`` in ``ranges[k] = (lo, hi)``."""
    lo = hi = 0
    for c, (vlo, vhi) in zip(coefs, ranges):
        a, b = int(c) * vlo, int(c) * vhi
        lo, hi = lo + min(a, b), hi + max(a, b)
    return lo, hi


def lincomb(m: Module, coefs, values, name: str):
    """``Σ coefs[k] · values[k]`` with small constant coefficients (0, ±1, ±2: adders and a
    one-bit shift), ``values`` a list of ``(value, (lo, hi))``.  Returns ``(signal, (lo, hi))``,
    the combinational signal exactly as wide as the interval of the sum."""
    expr = None
    for c, (v, _) in zip(coefs, values):
        c = int(c)
        if c == 0:
            continue
        mag = abs(c)
        term = v << (mag.bit_length() - 1) if mag & (mag - 1) == 0 else v * mag
        if expr is None:
            expr = -term if c < 0 else term
        else:
            expr = expr - term if c < 0 else expr + term
    lo, hi = lincomb_range(coefs, [r for _, r in values])
    s = Signal(elem_shape(lo, hi), name=name)
    m.d.comb += s.eq(0 if expr is None else expr)
    return s, (lo, hi)


def _union(ranges):
    return min(r[0] for r in ranges), max(r[1] for r in ranges)


def small_matrix(name: str, value, shape: tuple[int, int]) -> np.ndarray:
    """``value`` as an integer matrix of ``shape`` with entries 0, ±1 or ±2 (adders and a
    one-bit shift), else :class:`ValueError`."""
    a = np.asarray(value)
    if a.shape != shape or a.dtype.kind not in "iu" or np.abs(a).max(initial=0) > 2:
        raise ValueError(f"{name} must be a {shape[0]}×{shape[1]} integer matrix with entries "
                         f"0, ±1 or ±2, not {value!r}")
    return a.astype(np.int64)


def transform_ranges(bt, d_range) -> tuple[list, list]:
    """Exact intervals of the input transform for tile values in ``d_range``: ``t[i]`` of the
    column transform ``t_j[i] = Σ_k bt[i, k] d[k, j]`` (the same for every column ``j``), and
    ``v[i][l]`` of ``V[i, l] = Σ_j bt[l, j] t_j[i]``
    (:meth:`hwgen.ir.WinogradAdderConv2d.v_range`)."""
    t = [lincomb_range(bt[i], [d_range] * 4) for i in range(4)]
    v = [[lincomb_range(bt[lane], [t[i]] * 4) for lane in range(4)] for i in range(4)]
    return t, v


def row_signature(v_shape, *, beats: int, groups: int) -> wiring.Signature:
    """The rows of ``V``, one per enabled cycle, from :class:`InputTransform` to the lanes
    (``hwgen.hw.winograd_lanes.TileLanes``).

    ``v``: row ``row`` of ``V`` (value ``l`` for lane ``l``); ``valid``: ``v`` is a row;
    ``first`` / ``last``: of the first / last input channel of the pass; ``group``: the pass's
    output-channel group; ``u_addr = beat · 4 + row`` of the row presented in the *next* enabled
    cycle, for the consumer's synchronous ``u`` ROM (read with the clock enable, its data lines
    up with ``v``).
    """
    return wiring.Signature({
        "v": Out(data.ArrayLayout(v_shape, 4)),
        "valid": Out(1), "row": Out(2), "first": Out(1), "last": Out(1),
        "group": Out(range(groups)), "u_addr": Out(range(4 * beats)),
    })


class InputTransform(wiring.Component):
    """Winograd input transform ``V = bt · d · btᵀ`` of one 4×4 tile per beat, adders only.

    Each column of the tile is transformed as it arrives (``t_j = bt · d[:, j]``, four adders
    of two operands); with the fourth the four ``t_j`` are held, and row ``r`` of
    ``V = [t_0 … t_3] · btᵀ`` is formed in the ``r``-th following enabled cycle by four adders
    shared by the rows.  Every width is exact (:func:`transform_ranges`).

    Parameters (keyword-only)
    -------------------------
    bt : 4×4 integer matrix
        Entries 0, ±1, ±2.
    in_range : (int, int)
        Exact interval of the input values (the tiles' zero padding is added to it).
    overlap : bool
        Hold a second copy of the column transforms, so that the next beat's columns load
        while the rows of ``V`` are formed (a beat every 4 cycles); or not (sixteen registers
        fewer): then ``columns.hold`` keeps the next beat from starting until the row 1 of
        ``V`` is formed (a beat every 7 cycles).
    beats : int
        Beats per tile (``groups · C``), the range of ``columns.beat``.
    groups : int
        Output-channel groups, the range of ``columns.group``.

    Members
    -------
    en : ``In(1)``
        Clock enable (nothing moves while low).
    columns : ``In(column_signature(elem_shape(*in_range), beats=beats, groups=groups))``
        The tile's columns 0..3 of each beat, in order
        (:class:`~hwgen.hw.winograd_buffer.TilePairBuffer`).
    rows : ``Out(row_signature(v_shape, beats=beats, groups=groups))``
        The four rows of ``V``, carrying the beat's tags.

    Timing
    ------
    Row ``r`` of a beat leaves ``r + 1`` enabled cycles after its fourth column arrives; a row
    per enabled cycle, a beat per 4 (``overlap``) or 7 enabled cycles at most.
    """

    def __init__(self, *, bt, in_range: tuple[int, int], overlap: bool, beats: int,
                 groups: int):
        with constructing(self):
            self._bt = small_matrix("bt", bt, (4, 4))
            lo, hi = (int(v) for v in in_range)
            if lo > hi:
                raise ValueError(f"in_range must not be empty, not {tuple(in_range)!r}")
            if not isinstance(overlap, (bool, int)) or overlap not in (0, 1):
                raise TypeError(f"overlap must be a bool, not {overlap!r}")
            for name, v in (("beats", beats), ("groups", groups)):
                if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                    raise TypeError(f"{name} must be a positive integer, not {v!r}")
            self._overlap = bool(overlap)
            self._in_range = (lo, hi)
            # The tiles hold zeros (padding, completion), whatever the inputs' interval.
            self._d_range = (min(lo, 0), max(hi, 0))
            self._t_ranges, self._v_ranges = transform_ranges(self._bt, self._d_range)
            v_shape = elem_shape(*_union([r for row in self._v_ranges for r in row]))
        super().__init__({
            "en": In(1),
            "columns": In(column_signature(elem_shape(lo, hi), beats=beats, groups=groups)),
            "rows": Out(row_signature(v_shape, beats=beats, groups=groups)),
        })

    @property
    def overlap(self) -> bool:
        return self._overlap

    @property
    def v_ranges(self) -> list[list[tuple[int, int]]]:
        """``v_ranges[r][l]``: exact interval of ``V[r, l]``."""
        return self._v_ranges

    def elaborate(self, platform):
        m = Module()
        bt, en, cols, rows = self._bt, self.en, self.columns, self.rows

        # ---- the column transform of each column as it arrives, held in load registers
        col = [(cols.data[k], self._d_range) for k in range(4)]
        t = [lincomb(m, bt[i], col, f"t{i}")[0] for i in range(4)]
        loaded = []
        for j in range(3 if self._overlap else 4):
            regs = [Signal(t[i].shape(), name=f"t{j}_{i}") for i in range(4)]
            with m.If(en & cols.valid & (cols.index == j)):
                m.d.sync += [r.eq(t[i]) for i, r in enumerate(regs)]
            loaded.append(regs)
        # The fourth column completes the tile: its transform is used as it comes.
        last_column = Signal()
        m.d.comb += last_column.eq(cols.valid & (cols.index == 3))
        if self._overlap:
            loaded.append(t)
            held = [[Signal(t[i].shape(), name=f"th{j}_{i}") for i in range(4)] for j in range(4)]
            with m.If(en & last_column):
                m.d.sync += [held[j][i].eq(loaded[j][i]) for j in range(4) for i in range(4)]
        else:
            # The rows are formed from the load registers: column 0 of the next beat, written
            # one cycle after its issue, may not overwrite them before row 3 is formed.
            held = loaded

        # ---- the row sequencer: rows 0..3 after the fourth column, with the beat's tags
        row_on, beat = Signal(), Signal.like(cols.beat)
        with m.If(en):
            with m.If(last_column):
                m.d.sync += [row_on.eq(1), rows.row.eq(0), rows.first.eq(cols.first),
                             rows.last.eq(cols.last), beat.eq(cols.beat), rows.group.eq(cols.group)]
            with m.Elif(row_on):
                m.d.sync += rows.row.eq(rows.row + 1)
                with m.If(rows.row == 3):
                    m.d.sync += row_on.eq(0)
        m.d.comb += rows.valid.eq(row_on)
        if not self._overlap:
            m.d.comb += cols.hold.eq(last_column | (row_on & (rows.row < 2)))
        next_row = Signal(2)
        m.d.comb += next_row.eq(rows.row + 1)
        m.d.comb += rows.u_addr.eq(Mux(last_column, Cat(Const(0, 2), cols.beat),
                                       Cat(next_row, beat)))

        # ---- row r of V: V[r, l] = Σ_j bt[l, j] t_j[r], four adders shared by the rows
        t_union = _union(self._t_ranges)
        t_row = []
        for j in range(4):
            sel = Signal(elem_shape(*t_union), name=f"trow{j}")
            with m.Switch(rows.row):
                for i in range(4):
                    with m.Case(i):
                        m.d.comb += sel.eq(held[j][i])
            t_row.append((sel, t_union))
        for lane in range(4):
            # Row r's value lies in v_ranges[r][lane]: the port's shape holds every row's.
            m.d.comb += rows.v[lane].eq(lincomb(m, bt[lane], t_row, f"vrow{lane}")[0])
        return m
