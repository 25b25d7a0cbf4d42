"""The l1 lanes of the Winograd tile engine, with the output transform ``Aᵀ M A`` folded into
their accumulators: a row of ``V`` in per cycle, the 2×2 output tiles of ``pe`` channels out."""

from __future__ import annotations

import numpy as np
from amaranth import Module, Mux, Shape, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .. import ir
from . import constructing, elem_shape, ice40_blocks
from .conv import ROM_BLOCK_BITS, pack_words
from .pe import Lane
from .winograd_transform import lincomb, row_signature, small_matrix

__all__ = ["TileLanes", "tile_signature", "LANES", "lane_specs", "accumulator_ranges", "u_words",
           "rom_attrs"]

#: l1 lanes per PE: one row of the 4×4 tile per cycle.
LANES = 4


def rom_attrs(width: int, depth: int) -> dict:
    """Where a weight ROM goes: block RAM when it is large (at least
    :data:`~hwgen.hw.conv.ROM_BLOCK_BITS`) and fills at least a quarter of the iCE40 blocks it
    needs (:func:`~hwgen.hw.ice40_blocks`, 4 kbit each); else logic, where a narrow-and-shallow
    ROM costs fewer resources than whole blocks (a 32 × 56-bit ROM would take four blocks,
    11 % full)."""
    bits = width * depth
    if bits >= ROM_BLOCK_BITS and 4 * bits >= ice40_blocks(width, depth) * 4096:
        return {"rom_style": "block"}
    return {"rom_style": "logic"}


def lane_specs(u: np.ndarray, v_lo: np.ndarray, v_hi: np.ndarray) -> list[Lane]:
    """The :class:`~hwgen.hw.pe.Lane` of each of the :data:`LANES` lanes: lane ``l`` serves the
    four rows of ``V`` in turn, so its input interval is the union over the rows of
    ``[v_lo[r, l], v_hi[r, l]]``; its weights are ``u[..., l]``."""
    return [Lane("l1", (int(v_lo[:, lane].min()), int(v_hi[:, lane].max())),
                 (int(u[..., lane].min()), int(u[..., lane].max()))) for lane in range(LANES)]


def accumulator_ranges(u: np.ndarray, at: np.ndarray, v_lo, v_hi) -> list[list[tuple[int, int]]]:
    """``[a][b]``: interval of every partial sum of the output accumulator ``Y[a, b] =
    Σ_{c, r, l} at[a, r] at[b, l] |u[o, c, r, l] - V[r, l]|`` (in any order), the subset-sum
    bound of its terms' intervals (:func:`hwgen.ir.abs_diff_range`), over the channels ``o``."""
    tmin, tmax = ir.abs_diff_range(u, v_lo, v_hi)                             # (O, C, 4, 4)
    out = [[None] * 2 for _ in range(2)]
    for a in range(2):
        for b in range(2):
            coef = np.outer(at[a], at[b]).astype(np.int64)                    # (4, 4)
            p, q = coef * tmin, coef * tmax
            lo = np.minimum(0, np.minimum(p, q)).sum(axis=(1, 2, 3)).min()
            hi = np.maximum(0, np.maximum(p, q)).sum(axis=(1, 2, 3)).max()
            out[a][b] = (int(lo), int(hi))
    return out


def u_words(u: np.ndarray, lanes: list[Lane], pe: int) -> np.ndarray:
    """Raw ``u`` words ``(groups · C · 4, pe, LANES)``: address ``(g·C + c)·4 + r`` holds, for
    PE ``p`` and lane ``l``, ``u[g·pe + p, c, r, l]`` (:meth:`~hwgen.hw.pe.Lane.encode`)."""
    o, c = u.shape[:2]
    words = np.zeros((o // pe * c * 4, pe, LANES), dtype=object)
    for g in range(o // pe):
        for ch in range(c):
            for r in range(4):
                for p in range(pe):
                    for lane in range(LANES):
                        words[(g * c + ch) * 4 + r, p, lane] = lanes[lane].encode(
                            u[g * pe + p, ch, r, lane])
    return words


def tile_signature(tile_shape, *, pe: int, groups: int) -> wiring.Signature:
    """The finished 2×2 output tiles, from :class:`TileLanes` to the requantization stage
    (:class:`~hwgen.hw.winograd_requant.TileRequant`).

    ``y[p][k]``: value ``k = 2a + b`` of PE ``p``'s tile, in magnitude; ``done``: ``y`` is
    complete (the consumer takes it in an enabled cycle); ``group``: the tile's output-channel
    group (channels ``group · pe + p``).
    """
    return wiring.Signature({
        "y": Out(data.ArrayLayout(data.ArrayLayout(tile_shape, 4), pe)),
        "done": Out(1), "group": Out(range(groups)),
    })


class TileLanes(wiring.Component):
    """``pe`` PEs of :data:`LANES` l1 lanes with the Winograd output transform folded into
    four accumulators per PE.

    Lane ``l`` of PE ``p`` computes ``|u[g·pe + p, c, r, l] - V[r, l]|`` for the row ``r`` of
    ``V`` presented (``u`` from a ROM of ``pe · 4`` values per word, block RAM when large and
    well filled, :func:`rom_attrs`).  The output transform is linear, so each row of terms is
    transformed as it comes: ``Y[a, b] += at[a, r] · Σ_l at[b, l] · term_l``, into four
    accumulators per PE (restarted by row 0 of the pass's first channel), not sixteen and a
    transform at the end; an accumulator's step ``± (s << k)`` or ``0`` is one adder (the
    negation ``~s`` with the carry in).  In magnitudes: the layer's output is ``-Y``.

    Parameters (keyword-only)
    -------------------------
    u : array ``(O, C, 4, 4)`` of int
        The transformed kernel.
    v_range : (array (4, 4), array (4, 4))
        Exact interval of each ``V[r, l]`` (:meth:`hwgen.ir.WinogradAdderConv2d.v_range`).
    at : 2×4 integer matrix
        Entries 0, ±1, ±2.
    pe : int
        Output channels in parallel, divides ``O``; ``groups = O / pe`` passes per tile.

    Members
    -------
    en : ``In(1)``
        Clock enable (nothing moves while low).
    rows : ``In(row_signature(v_shape, beats=groups · C, groups=groups))``
        Rows of ``V`` (:class:`~hwgen.hw.winograd_transform.InputTransform`); ``u_addr`` is
        read by the ROM with ``en``.
    tiles : ``Out(tile_signature(tile_shape, pe=pe, groups=groups))``
        The accumulators (:attr:`tile_shape` holds every partial sum): complete, for the
        pass's group, while ``done`` is high (the enabled cycle after a pass's last term is
        accumulated; held while ``en`` is low).  The consumer takes them then, or holds ``en``
        low.

    Timing
    ------
    A row per enabled cycle; ``done`` rises :attr:`latency` enabled cycles after the last row
    of a pass (the term register, then the accumulator).
    """

    latency = 2

    def __init__(self, *, u, v_range, at, pe: int):
        with constructing(self):
            u = np.asarray(u)
            if u.ndim != 4 or u.shape[2:] != (4, 4) or u.dtype.kind not in "iu":
                raise ValueError(f"u must be an integer array of shape (O, C, 4, 4), not "
                                 f"{u.dtype} {u.shape}")
            self._u = u.astype(np.int64)
            o, c = u.shape[:2]
            self._at = small_matrix("at", at, (2, 4))
            if not isinstance(pe, int) or isinstance(pe, bool) or pe < 1 or o % pe:
                raise ValueError(f"pe must divide the {o} output channels, not {pe!r}")
            self._pe, self._groups, self._channels = pe, o // pe, c
            v_lo, v_hi = (np.asarray(v, dtype=np.int64) for v in v_range)
            self._lanes = lane_specs(self._u, v_lo, v_hi)
            self._acc_ranges = accumulator_ranges(self._u, self._at, v_lo, v_hi)
            acc = [r for row in self._acc_ranges for r in row]
            self._tile_shape = elem_shape(min(r[0] for r in acc), max(r[1] for r in acc))
            beats = self._groups * c
        super().__init__({
            "en": In(1),
            "rows": In(row_signature(elem_shape(int(v_lo.min()), int(v_hi.max())),
                                     beats=beats, groups=self._groups)),
            "tiles": Out(tile_signature(self._tile_shape, pe=pe, groups=self._groups)),
        })

    @property
    def tile_shape(self):
        """The shape of a value on ``tiles.y``: the union of :attr:`acc_ranges`."""
        return self._tile_shape

    @property
    def lanes(self) -> list[Lane]:
        return self._lanes

    @property
    def u_width(self) -> int:
        """Bits of one lane's ``u`` in the ROM word."""
        return max(lane.w_width for lane in self._lanes)

    @property
    def acc_ranges(self) -> list[list[tuple[int, int]]]:
        """:func:`accumulator_ranges`."""
        return self._acc_ranges

    def u_rom(self) -> list[int]:
        """ROM words: :func:`u_words` packed, PE 0 lane 0 in the LSBs, :attr:`u_width` bits each."""
        return pack_words(u_words(self._u, self._lanes, self._pe), self.u_width)

    def elaborate(self, platform):
        m = Module()
        pe, at, en, rows = self._pe, self._at, self.en, self.rows
        ub = self.u_width

        m.submodules.rom = rom = Memory(shape=unsigned(pe * LANES * ub),
                                        depth=self._groups * self._channels * 4, init=self.u_rom(),
                                        attrs=rom_attrs(pe * LANES * ub,
                                                        self._groups * self._channels * 4))
        rom_port = rom.read_port()
        m.d.comb += [rom_port.addr.eq(rows.u_addr), rom_port.en.eq(en)]

        # ---- the tags, one register stage with the terms, one with the accumulators
        terms_valid, terms_row = Signal(), Signal(2)
        terms_first, terms_last, terms_group = Signal(), Signal(), Signal.like(rows.group)
        with m.If(en):
            m.d.sync += [terms_valid.eq(rows.valid), terms_row.eq(rows.row),
                         terms_first.eq(rows.first), terms_last.eq(rows.last),
                         terms_group.eq(rows.group),
                         self.tiles.done.eq(terms_valid & terms_last & (terms_row == 3)),
                         self.tiles.group.eq(terms_group)]
        restart = Signal()  # the pass's first term row: the accumulators start again
        m.d.comb += restart.eq(terms_first & (terms_row == 0))

        # ---- the coefficients at[a, r] of the row of terms being accumulated
        coef = {}
        for a in range(2):
            neg, nonzero, double = (Signal(name=f"{n}{a}") for n in ("neg", "nonzero", "double"))
            with m.Switch(terms_row):
                for r in range(4):
                    with m.Case(r):
                        c = int(at[a, r])
                        m.d.comb += [neg.eq(c < 0), nonzero.eq(c != 0), double.eq(abs(c) == 2)]
            coef[a] = neg, nonzero, double, 2 in np.abs(at[a])

        v = []
        for lane, spec in enumerate(self._lanes):
            v.append(Signal(spec.x_shape, name=f"v{lane}"))
            m.d.comb += v[lane].eq(rows.v[lane])  # row r's value, inside the lane's union

        for p in range(pe):
            # ---- lanes: |u - V[r, l]|, registered
            terms = []
            for lane, spec in enumerate(self._lanes):
                w = Signal(spec.w_layout, name=f"u{p}_{lane}")
                pos = (p * LANES + lane) * ub
                m.d.comb += w.eq(rom_port.data[pos:pos + spec.w_width])
                term = spec.term(m, v[lane], w, f"l{p}_{lane}")
                term_q = Signal(term.shape(), name=f"term{p}_{lane}")
                with m.If(en):
                    m.d.sync += term_q.eq(term)
                terms.append((term_q, spec.term_range))

            # ---- output transform: Y[a, b] += at[a, r] · s_b, s_b = Σ_l at[b, l] · term_l
            row_sums = [lincomb(m, at[b], terms, f"s{p}_{b}") for b in range(2)]
            for a in range(2):
                neg, nonzero, double, has_two = coef[a]
                for b in range(2):
                    acc = Signal(elem_shape(*self._acc_ranges[a][b]), name=f"y{p}_{a}{b}")
                    row_sum, (s_lo, s_hi) = row_sums[b]
                    if has_two:
                        scaled = Signal(elem_shape(min(0, 2 * s_lo), max(0, 2 * s_hi)),
                                        name=f"ss{p}_{a}{b}")
                        m.d.comb += scaled.eq(Mux(double, row_sum << 1, row_sum))
                    else:
                        scaled = row_sum
                    width = max(len(acc), len(scaled)) + 1
                    ext = Signal(Shape(width, True), name=f"sx{p}_{a}{b}")
                    step = Signal(Shape(width, True), name=f"inc{p}_{a}{b}")
                    m.d.comb += [ext.eq(scaled), step.eq(Mux(nonzero, Mux(neg, ~ext, ext), 0))]
                    with m.If(en & terms_valid):
                        m.d.sync += acc.eq(Mux(restart, 0, acc) + step + (nonzero & neg))
                    m.d.comb += self.tiles.y[p][2 * a + b].eq(acc)
        return m
