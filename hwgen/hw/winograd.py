"""The Winograd-AdderNet tile engine: F(2×2, 3×3) with the element-wise product replaced by
an l1 distance, streaming like the direct engines (:class:`~hwgen.hw.conv.ConvEngine`)."""

from __future__ import annotations

import numpy as np
from amaranth import Cat, Const, Module, Mux, Shape, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .. import ir
from . import constructing, divisors, elem_shape, ice40_blocks
from .conv import ROM_BLOCK_BITS, check_io, pack_words, requant_slots
from .pe import Lane
from .requant import Requant, requant_shape
from .window import _add_mod
from .winograd_reorder import TileReorder

__all__ = ["WinogradEngine", "winograd_candidates", "winograd_cycles", "estimate_winograd_luts", "KIND",
           "LANES"]

KIND = "winograd_adder_conv2d"
#: l1 lanes per PE: one row of the 4×4 tile per cycle, the four rows in the four cycles the
#: next tile's columns take to load.
LANES = 4


def _bits(n: int) -> int:
    """Bits of a counter over ``range(n)`` used as an address field (0 for ``n == 1``)."""
    return max(0, (n - 1).bit_length())


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


def _lincomb(m: Module, coefs, values, name: str):
    """``Σ coefs[k] * values[k]`` with small constant coefficients (0, ±1, ±2: adders and a
    one-bit shift), ``values`` a list of ``(value, (lo, hi))``.  Returns ``(signal, (lo, hi))``,
    the signal exactly as wide as the interval of the sum."""
    lo = hi = 0
    expr = None
    for c, (v, (vlo, vhi)) in zip(coefs, values):
        c = int(c)
        if c == 0:
            continue
        a, b = c * vlo, c * vhi
        lo, hi = lo + min(a, b), hi + max(a, b)
        mag = abs(c)
        term = v << (mag.bit_length() - 1) if mag & (mag - 1) == 0 else v * mag
        if expr is None:
            expr = -term if c < 0 else term
        else:
            expr = expr - term if c < 0 else expr + term
    s = Signal(elem_shape(lo, hi), name=name)
    m.d.comb += s.eq(0 if expr is None else expr)
    return s, (lo, hi)


def _union(ranges):
    return min(r[0] for r in ranges), max(r[1] for r in ranges)


def _check_layer(layer, in_shape):
    if getattr(layer, "kind", None) != KIND:
        raise TypeError(f"WinogradEngine computes {KIND} layers, not "
                        f"{getattr(layer, 'kind', None) or type(layer).__name__!r}")
    if len(in_shape) != 3:
        raise ValueError(f"in_shape must be (C, H, W), got {tuple(in_shape)}")
    layer.out_shape(tuple(in_shape))  # validates channels and sizes


def _tiles(layer, in_shape):
    c, h, w = in_shape
    o = layer.u.shape[0]
    oh, ow = h + 2 * layer.padding - 2, w + 2 * layer.padding - 2
    return o, c, (oh + 1) // 2, (ow + 1) // 2, oh, ow


def beat_cycles(overlap: bool) -> int:
    """Cycles per beat (one channel of one tile for one group): four column loads, overlapped
    with the previous beat's four lane rows, or, without the second tile buffer, the loads of
    the next beat wait until the lanes are at row 2 (seven)."""
    return 4 if overlap else 7


def winograd_cycles(layer, in_shape, requant, pe: int, overlap: bool = True) -> int:
    """Cycles per image of a :class:`WinogradEngine` folded by ``(pe, overlap)``."""
    o, c, th, tw, oh, ow = _tiles(layer, in_shape)
    groups = o // pe
    compute = tw * groups * max(beat_cycles(overlap) * c, LANES * requant_slots(requant))
    emit = min(2, oh) * ow * (groups + 2)
    return th * max(compute, emit)


def estimate_winograd_luts(layer, in_shape, in_range, requant, pe: int, overlap: bool = True) -> int:
    """Rough iCE40 LUT4 count of a :class:`WinogradEngine` (for the folding, not a report):
    per PE the four l1 lanes, the 16-register accumulator's four adders and row muxes, the
    output transform's adders and a requantizer; once the input transform and the schedule."""
    o, c, th, tw, oh, ow = _tiles(layer, in_shape)
    lo, hi = (int(v) for v in in_range)
    v_lo, v_hi = layer.v_range(lo, hi)
    vb = ir.bits_for(int(v_lo.min()), int(v_hi.max()))[0]
    m_lo, m_hi = layer.lane_range(lo, hi)
    mb = ir.bits_for(0, int(-m_lo.min()))[0]
    yb = mb + 3
    ub = ir.bits_for(int(layer.u.min()), int(layer.u.max()))[0]
    lanes = LANES * (max(vb, ub) + 1 + vb + 1)
    acc = LANES * (mb + 2 * mb)          # adder and the 4:1 row mux ahead of it
    out_transform = 24 * yb // 2 + 4 * yb
    maxp = max((p for mlt in requant.mult for _, p in ir.csd(int(mlt))), default=0)
    rq = 3 * (yb + maxp) + 2 * requant.out_bits
    # Column transforms, the four row adders; the held tile is sixteen registers of which most
    # cannot share a logic cell with a LUT (they copy other registers).
    input_transform = 8 * vb + (16 * vb if overlap else 0)
    schedule = 350 + 2 * o * requant.out_bits // max(1, pe) + o * requant.out_bits
    return int(pe * (lanes + acc + out_transform + rq) + input_transform + schedule)


def winograd_candidates(layer, in_shape, in_range, requant) -> list[tuple[int, int, int, int]]:
    """``(cycles per image, estimated LUTs, pe, overlap)`` of every folding of the engine
    (``overlap`` 1 or 0, see :class:`WinogradEngine`)."""
    _check_layer(layer, in_shape)
    o = layer.u.shape[0]
    return [(winograd_cycles(layer, in_shape, requant, pe, bool(ov)),
             estimate_winograd_luts(layer, in_shape, in_range, requant, pe, bool(ov)), pe, ov)
            for pe in divisors(o) for ov in (1, 0)]


class WinogradEngine(wiring.Component):
    """Winograd-AdderNet F(2×2, 3×3) convolution + fused per-channel requantization, streaming.

    ``Y[o] = at · (-Σ_c |u[o, c] - bt · d_c · btᵀ|) · atᵀ`` for every 4×4 input tile ``d``
    stepping by 2 (:class:`hwgen.ir.WinogradAdderConv2d`, exactly as :func:`hwgen.golden.winograd_adder`:
    zero padding, and an odd output size completed to whole tiles with zeros and cropped), then
    ``requant``.  Pixels in and out in raster order, like every engine.

    Structure, in pipeline order:

    * **Tile window.**  A line buffer of four row-pair slots: a
      :class:`~amaranth.lib.memory.Memory` word holds one channel of one pixel in two input rows
      (the rows ``2q - pad`` and ``2q - pad + 1`` of an image form its pair ``q``), so the four
      rows of a tile are two pairs, read by two ports (two block-RAM copies on iCE40), and four
      pair slots let the next two pairs (the next image's first tile row) arrive meanwhile: a cycle
      reads one column of the 4×4 tile of one channel (taps outside the image read 0).  Tiles
      are visited in raster order, for each the output-channel groups, for each the input
      channels: a *beat* (tile, group, channel) is four cycles.
    * **Input transform**, adders only: each column is transformed as it arrives
      (``t_j = bt · d[:, j]``); with the fourth column the four ``t_j`` are held, and during the
      next beat's four loading cycles row ``r`` of ``V = [t_0 … t_3] · btᵀ`` is formed, one row
      per cycle, by four adders shared by the rows.
    * **l1 lanes.**  ``pe`` PEs of :data:`LANES` lanes: lane ``l`` of PE ``p`` computes
      ``|u[g·pe + p, c, r, l] - V[r, l]|`` for rows ``r = 0..3``, ``u`` read from a ROM (``pe·4``
      values of ``u`` per word; block RAM when large and well filled, :func:`rom_attrs`).
    * **Output transform**, adders only, folded into the accumulation: it is linear, so each row
      of terms is transformed as it comes, ``Y[a, b] += at[a, r] · Σ_l at[b, l] · term_l``, into
      four accumulators per PE (restarted by the first channel), not sixteen accumulators and a
      transform at the end.  In magnitudes: the requantizer negates.
    * **Requantization**: one sequential :class:`~hwgen.hw.requant.Requant` per PE takes the
      four values of its tile one after the other.
    * **Output reorder**: the results go into a double-buffered memory of two tile rows' output
      (one word = the ``pe`` values of one requantization step); a reader gathers the ``O``
      channels of each output pixel and sends the pixels in raster order, cropping an odd size.

    Every width is derived from the layer: the column transforms and ``V`` per row and lane
    (``V`` exactly :meth:`~hwgen.ir.WinogradAdderConv2d.v_range`), the lanes' differences, the
    output accumulators by the subset-sum bound of their terms, the held outputs by
    :meth:`~hwgen.ir.WinogradAdderConv2d.out_range`.

    Parameters
    ----------
    layer : :class:`hwgen.ir.WinogradAdderConv2d`
    requant : :class:`hwgen.ir.Requant` with ``O`` channels
    in_shape : (C, H, W)
    in_range : (int, int)
        Exact interval of the inputs.
    pe : int
        Output channels in parallel (divides ``O``).
    overlap : bool
        Hold a second copy of the tile's column transforms so the next beat loads while the
        lanes work (a beat every 4 cycles), or not (every 7 cycles, sixteen registers fewer);
        ``pe`` and ``overlap`` are the :class:`~hwgen.hw.spec.WinogradFolding` the planner
        (:mod:`hwgen.hw.plan`) chose; :meth:`from_spec` builds the engine of a spec.

    Members
    -------
    i : ``In(stream.Signature(ArrayLayout(bits_for(*in_range), C)))``
    o : ``Out(stream.Signature(ArrayLayout(requant_shape(requant), O)))``

    Timing
    ------
    ``cycles_per_image = TH · max(TW · G · 4 · max(C, slots), rows · OW · (G + 2))``: a beat
    is four cycles; a tile's pass over the ``C`` channels takes ``4C`` cycles, and the four
    requantizations of its result ``4·slots`` (overlapping the next pass); the output of a tile
    row leaves at one pixel per ``G + 2`` cycles while the next row computes.  ``G = O / pe``,
    ``TH × TW`` the tiles, ``rows = min(2, OH)``.  :attr:`latency` is an upper estimate of
    the cycles from the issue of a tile row's last beat to its first output pixel.
    """

    def __init__(self, layer, requant: ir.Requant, in_shape: tuple[int, int, int], in_range: tuple[int, int],
                 *, pe: int, overlap: bool):
        with constructing(self):
            if not isinstance(requant, ir.Requant):
                raise TypeError(f"requant must be an hwgen.ir.Requant, not {type(requant).__name__}")
            in_shape = tuple(int(v) for v in in_shape)
            _check_layer(layer, in_shape)
            o, c, th, tw, oh, ow = _tiles(layer, in_shape)
            lo, hi = check_io(layer, requant, o, in_range)
            if overlap not in (True, False, 0, 1):
                raise ValueError(f"{layer.name}: overlap={overlap!r}; use 1 (a second tile buffer, a beat "
                                 f"every 4 cycles) or 0 (every 7 cycles)")
            self.overlap = bool(overlap)
            if not isinstance(pe, int) or isinstance(pe, bool) or pe < 1 or o % pe:
                raise ValueError(f"{layer.name}: pe={pe!r} must divide the {o} output channels "
                                 f"(one of {divisors(o)})")
            self.layer, self.requant = layer, requant
            self.in_shape, self.in_range = in_shape, (lo, hi)
            self.weight = layer.u  # (O, C, 4, 4): for code that reads any engine's weights
            self.padding = int(layer.padding)
            self.pe, self.groups = pe, o // pe
            self.O, self.C = o, c
            self.TH, self.TW = th, tw
            self.out_hw = (oh, ow)
            self.in_elem = elem_shape(lo, hi)
            self.out_elem = requant_shape(requant)
            self.rq_slots = requant_slots(requant)
            self._ranges()
            self.u_width = max(lane.w_width for lane in self.lanes)
            # Issue → V (2) → four rows (4) → term, accumulate, transform (3) → four values
            # through the requantizer → the tile row's first pixel gathered (G + 2).
            self.latency = 9 + LANES * self.rq_slots + self.groups + 2
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(self.in_elem, c))),
            "o": Out(stream.Signature(data.ArrayLayout(self.out_elem, o))),
        })

    @classmethod
    def from_spec(cls, spec) -> "WinogradEngine":
        """The engine of a :class:`~hwgen.hw.spec.WinogradSpec`, folded as it says."""
        f = spec.folding
        return cls(spec.layer, spec.requant, spec.in_shape, spec.in_range, pe=f.pe,
                   overlap=bool(f.overlap))

    def _ranges(self):
        """Exact intervals of every stage, from the input interval and ``u``."""
        layer = self.layer
        bt, at = layer.bt, layer.at
        d_range = (min(self.in_range[0], 0), max(self.in_range[1], 0))
        # Column transform t_j[i] = Σ_k bt[i, k] d[k, j]; every column has the same intervals.
        self.t_ranges = [tuple(int(v) for v in ir._affine_range(bt[i].astype(np.int64), *d_range))
                         for i in range(4)]
        # V[i, l] = Σ_j bt[l, j] t_j[i].
        self.v_ranges = [[tuple(int(v) for v in ir._affine_range(bt[l].astype(np.int64), *self.t_ranges[i]))
                          for l in range(4)] for i in range(4)]
        v_lo, v_hi = layer.v_range(*self.in_range)
        assert all(self.v_ranges[i][l] == (int(v_lo[i, l]), int(v_hi[i, l])) for i in range(4) for l in range(4))
        # Lane l serves the four rows in turn: its input is the union over the rows.
        u = layer.u.astype(np.int64)
        self.lanes = [Lane("l1", _union([self.v_ranges[i][l] for i in range(4)]),
                           (int(u[..., l].min()), int(u[..., l].max()))) for l in range(LANES)]
        # Output accumulators Y[a, b] = Σ_{c, i, l} at[a, i] at[b, l] |u[o, c, i, l] - V[i, l]|:
        # every partial sum (any order) lies in the subset-sum bound of its terms' intervals.
        tmin, tmax = ir.abs_diff_range(u, v_lo, v_hi)                             # (O, C, 4, 4)
        self.y_acc_ranges = [[None] * 2 for _ in range(2)]
        for a in range(2):
            for b in range(2):
                coef = np.outer(at[a], at[b]).astype(np.int64)                    # (4, 4)
                p, q = coef * tmin, coef * tmax
                lo = np.minimum(0, np.minimum(p, q)).sum(axis=(1, 2, 3)).min()
                hi = np.maximum(0, np.maximum(p, q)).sum(axis=(1, 2, 3)).max()
                self.y_acc_ranges[a][b] = (int(lo), int(hi))
        # The complete outputs, in magnitudes (the layer's output is their negation).
        y_lo, y_hi = layer.out_range(*self.in_range)
        self.y_range = (-int(y_hi), -int(y_lo))

    @property
    def cycles_per_image(self) -> int:
        return winograd_cycles(self.layer, self.in_shape, self.requant, self.pe, self.overlap)

    @property
    def params(self) -> dict:
        return {
            "pe": self.pe, "overlap": int(self.overlap), "l1_lanes": LANES, "lane": "l1", "tile": "F(2x2,3x3)", "groups": self.groups,
            "in_bits": self.in_elem.width, "weight_bits": self.u_width,
            "v_bits": max(ir.bits_for(*r)[0] for row in self.v_ranges for r in row),
            "acc_bits": max(ir.bits_for(*r)[0] for row in self.y_acc_ranges for r in row),
            "out_bits": self.out_elem.width, "latency": self.latency, "cycles_per_image": self.cycles_per_image,
        }

    def u_words(self) -> np.ndarray:
        """Raw ``u`` words ``(groups * C * 4, pe, LANES)``: address ``(g·C + c)·4 + r`` holds,
        for PE ``p`` and lane ``l``, ``u[g·pe + p, c, r, l]`` (:meth:`~hwgen.hw.pe.Lane.encode`)."""
        u = self.layer.u
        words = np.zeros((self.groups * self.C * 4, self.pe, LANES), dtype=object)
        for g in range(self.groups):
            for c in range(self.C):
                for r in range(4):
                    for p in range(self.pe):
                        for lane in range(LANES):
                            words[(g * self.C + c) * 4 + r, p, lane] = self.lanes[lane].encode(u[g * self.pe + p, c, r, lane])
        return words

    def u_rom(self) -> list[int]:
        """ROM words: :meth:`u_words` packed, PE 0 lane 0 in the LSBs, ``u_width`` bits each."""
        return pack_words(self.u_words(), self.u_width)

    # ------------------------------------------------------------------ hardware

    def elaborate(self, platform):
        m = Module()
        C, (_, H, W), pad = self.C, self.in_shape, self.padding
        TH, TW, G, pe = self.TH, self.TW, self.groups, self.pe
        OH, OW = self.out_hw
        bt, at = self.layer.bt, self.layer.at
        eb = self.in_elem.width

        ce = Signal()      # clock enable of the tile side: issue, transforms, lanes, accumulators
        ce_out = Signal()  # clock enable of the requantizers (stops while a result cannot be stored)

        # ---------------------------------------------------------------- line buffer
        # A word is one channel of two input rows of a pixel: the rows 2q - pad and 2q - pad + 1
        # of an image form its row pair q (P pairs per image), so a tile (rows 2ty - pad ..
        # 2ty - pad + 3) is the pairs ty and ty + 1: two read ports (two block-RAM copies on
        # iCE40, not four).  RP = 4 pair slots: the two being read and two being written.
        RP, P = 4, (H + pad + 1) // 2
        sb = _bits(C)  # address Cat(channel, slot * W + x)
        m.submodules.lines = lines = Memory(shape=unsigned(2 * eb), depth=(RP * W) << sb, init=[],
                                            attrs={"no_rw_check": 1})
        wp = lines.write_port(granularity=eb)
        rps = [lines.read_port() for _ in range(2)]

        # Issue state: tile (ty, tx), group g, channel c, column j.
        ty, tx = Signal(range(TH)), Signal(range(TW))
        g, ch, j = Signal(range(G)), Signal(range(C)), Signal(2)
        widx = Signal(range(G * C))              # g * C + c: the beat's u address / 4
        rd_slot = Signal(range(RP))             # slot of pair ty
        # Writer state: pixel, channel, row of the image, the pair and its half, its slot.
        wr_x, wr_ch = Signal(range(W)), Signal(range(C))
        wr_row, wr_half = Signal(range(H)), Signal(init=pad % 2)
        wr_slot = Signal(range(RP))
        wr_ahead = Signal(range(H + 2 * RP + 1))  # rows written, counted from the reader's image
        wr_pair = Signal(range(P + RP + 1))       # the pair being written, counted likewise

        top = Signal(range(2 * TH + 4))
        m.d.comb += top.eq((ty << 1) + (4 - pad))
        need = Mux(top > H, H, top)
        issue = Signal()
        hold = Signal()  # without overlap: the next beat waits for the lanes (set below)
        m.d.comb += issue.eq(ce & (wr_ahead >= need) & ~hold)
        last_j, last_c, last_g = j == 3, ch == C - 1, g == G - 1
        last_x, last_y = tx == TW - 1, ty == TH - 1
        finish = Signal()
        m.d.comb += finish.eq(issue & last_j & last_c & last_g & last_x & last_y)
        with m.If(issue):
            m.d.sync += j.eq(j + 1)
            with m.If(last_j):
                m.d.sync += [ch.eq(ch + 1), widx.eq(widx + 1)]
                with m.If(last_c):
                    m.d.sync += [ch.eq(0), g.eq(g + 1)]
                    with m.If(last_g):
                        m.d.sync += [g.eq(0), widx.eq(0), tx.eq(tx + 1)]
                        with m.If(last_x):
                            m.d.sync += [tx.eq(0), ty.eq(ty + 1), rd_slot.eq(_add_mod(rd_slot, 1, RP))]
                            with m.If(last_y):
                                # The next image's pair 0: P - (TH - 1) pairs on.
                                m.d.sync += [ty.eq(0), rd_slot.eq(_add_mod(rd_slot, (P - TH + 1) % RP, RP))]

        # Writer: a pixel's channels one per cycle, the pixel taken with the last; a row into its
        # half of the pair words; the pair may be written once it is no longer read.
        space = Signal()
        m.d.comb += space.eq(wr_pair < ty + RP)
        take = Signal()
        wr_addr = Signal(range(RP * W))
        m.d.comb += wr_addr.eq(_slot_base(m, wr_slot, RP, W, "wr_base") + wr_x)
        word = self.i.payload.as_value().word_select(wr_ch, eb) if C > 1 else self.i.payload.as_value()
        m.d.comb += [
            wp.addr.eq(Cat(wr_ch, wr_addr) if sb else wr_addr),
            wp.data.eq(Cat(word, word)),
            wp.en.eq(Mux(self.i.valid & space, Mux(wr_half, 0b10, 0b01), 0)),
            self.i.ready.eq(space & (wr_ch == C - 1)),
            take.eq(self.i.valid & self.i.ready),
        ]
        if C > 1:
            with m.If(self.i.valid & space):
                m.d.sync += wr_ch.eq(Mux(wr_ch == C - 1, 0, wr_ch + 1))
        row_done = Signal()
        m.d.comb += row_done.eq(take & (wr_x == W - 1))
        pair_done = Signal()
        m.d.comb += pair_done.eq(row_done & (wr_half | (wr_row == H - 1)))
        with m.If(take):
            m.d.sync += wr_x.eq(Mux(wr_x == W - 1, 0, wr_x + 1))
        with m.If(row_done):
            m.d.sync += [wr_half.eq(~wr_half), wr_row.eq(wr_row + 1)]
            with m.If(wr_row == H - 1):
                m.d.sync += [wr_half.eq(pad % 2), wr_row.eq(0)]
        with m.If(pair_done):
            m.d.sync += wr_slot.eq(_add_mod(wr_slot, 1, RP))
        m.d.sync += [wr_ahead.eq(wr_ahead + row_done - Mux(finish, H, 0)),
                     wr_pair.eq(wr_pair + pair_done - Mux(finish, P, 0))]

        # Read addresses: port k reads pair ty + k (tile rows 2k, 2k + 1), column 2*tx - pad + j.
        ix = Signal(range(-pad, 2 * TW + 4))
        m.d.comb += ix.eq((tx << 1) + j - pad)
        inside_q = [Signal(name=f"inside{i}_q") for i in range(4)]
        for i in range(4):
            iy = Signal(range(-pad, 2 * TH + 4), name=f"iy{i}")
            m.d.comb += iy.eq((ty << 1) + (i - pad))
            with m.If(ce):
                m.d.sync += inside_q[i].eq((iy >= 0) & (iy < H) & (ix >= 0) & (ix < W))
        for k, rp in enumerate(rps):
            slot = Signal(range(RP), name=f"slot{k}")
            m.d.comb += slot.eq(_add_mod(rd_slot, k, RP))
            pixel = (_slot_base(m, slot, RP, W, f"base{k}") + ix.as_unsigned())[:len(wr_addr)]
            m.d.comb += [rp.addr.eq(Cat(ch, pixel) if sb else pixel), rp.en.eq(ce)]

        # ---------------------------------------------------------------- input transform
        v1, j1 = Signal(), Signal(2)
        first1, last1 = Signal(), Signal()
        widx1, g1 = Signal.like(widx), Signal.like(g)
        with m.If(ce):
            m.d.sync += [v1.eq(issue), j1.eq(j), first1.eq(ch == 0), last1.eq(last_c), widx1.eq(widx), g1.eq(g)]
        d_range = (min(self.in_range[0], 0), max(self.in_range[1], 0))
        col = []
        for i in range(4):
            s = Signal(self.in_elem, name=f"col{i}")
            m.d.comb += s.eq(Mux(inside_q[i], rps[i // 2].data.word_select(i % 2, eb), 0))
            col.append((s, d_range))
        t = [_lincomb(m, bt[i], col, f"t{i}") for i in range(4)]   # this column's transform
        tcols = []
        for jj in range(4 if not self.overlap else 3):
            regs = [Signal(t[i][0].shape(), name=f"t{jj}_{i}") for i in range(4)]
            with m.If(ce & v1 & (j1 == jj)):
                m.d.sync += [r.eq(t[i][0]) for i, r in enumerate(regs)]
            tcols.append(regs)
        if self.overlap:
            tcols.append([t[i][0] for i in range(4)])
        # With the fourth column the tile's column transforms are held for the lanes, which
        # finish the transform one row of V per cycle while the next beat loads.
        latch = Signal()
        m.d.comb += latch.eq(v1 & (j1 == 3))
        if self.overlap:
            t_hold = [[Signal(t[i][0].shape(), name=f"th{jj}_{i}") for i in range(4)] for jj in range(4)]
            with m.If(ce & latch):
                m.d.sync += [t_hold[jj][i].eq(tcols[jj][i]) for jj in range(4) for i in range(4)]
        else:
            # The lanes read the load registers: column 0 of the next beat, written one cycle
            # after its issue, may not overwrite them before row 3 is read.
            t_hold = tcols

        # ---------------------------------------------------------------- l1 lanes
        lane_on, lane_r = Signal(), Signal(2)
        lane_first, lane_last = Signal(), Signal()
        lane_widx, lane_g = Signal.like(widx), Signal.like(g)
        with m.If(ce):
            with m.If(latch):
                m.d.sync += [lane_on.eq(1), lane_r.eq(0), lane_first.eq(first1), lane_last.eq(last1),
                             lane_widx.eq(widx1), lane_g.eq(g1)]
            with m.Elif(lane_on):
                m.d.sync += lane_r.eq(lane_r + 1)
                with m.If(lane_r == 3):
                    m.d.sync += lane_on.eq(0)

        if not self.overlap:
            m.d.comb += hold.eq((j == 0) & (latch | (lane_on & (lane_r < 2))))
        # Row lane_r of V: V[r, l] = Σ_j bt[l, j] t_j[r], four adders shared by the rows.
        t_row = []
        for jj in range(4):
            sel = Signal(elem_shape(*_union(self.t_ranges)), name=f"trow{jj}")
            with m.Switch(lane_r):
                for i in range(4):
                    with m.Case(i):
                        m.d.comb += sel.eq(t_hold[jj][i])
            t_row.append((sel, _union(self.t_ranges)))
        v_row = []
        for lane in range(LANES):
            v, _ = _lincomb(m, bt[lane], t_row, f"vrow{lane}")
            x = Signal(self.lanes[lane].x_shape, name=f"v{lane}")
            m.d.comb += x.eq(v)  # row r's value lies in v_ranges[r][lane], inside the lane's union
            v_row.append(x)

        ub = self.u_width
        depth = G * C * 4
        wbits = pe * LANES * ub
        m.submodules.rom = rom = Memory(shape=unsigned(wbits), depth=depth, init=self.u_rom(),
                                         attrs=rom_attrs(wbits, depth))
        rrp = rom.read_port()
        next_r = Signal(2)
        m.d.comb += next_r.eq(lane_r + 1)
        m.d.comb += [rrp.addr.eq(Mux(latch, Cat(Const(0, 2), widx1), Cat(next_r, lane_widx))), rrp.en.eq(ce)]

        terms_valid, terms_row = Signal(), Signal(2)
        terms_first, terms_last, terms_group = Signal(), Signal(), Signal.like(g)
        with m.If(ce):
            m.d.sync += [terms_valid.eq(lane_on), terms_row.eq(lane_r), terms_first.eq(lane_first),
                         terms_last.eq(lane_last), terms_group.eq(lane_g)]
        m_done, m_g = Signal(), Signal.like(g)
        with m.If(ce):
            m.d.sync += [m_done.eq(terms_valid & terms_last & (terms_row == 3)), m_g.eq(terms_group)]

        # ---------------------------------------------------------------- output transform
        # Linear, so it is applied to every row of terms as it comes and the four outputs are
        # accumulated: Y[a, b] += at[a, r] · Σ_l at[b, l] |u - V[r, l]| (magnitudes; the
        # requantizer negates), restarted by the first channel's row 0.  Four accumulators per
        # PE instead of sixteen and a transform.
        y_accs = []
        for p in range(pe):
            terms = []
            for lane in range(LANES):
                spec = self.lanes[lane]
                w = Signal(spec.w_layout, name=f"u{p}_{lane}")
                pos = p * LANES + lane
                m.d.comb += w.eq(rrp.data[pos * ub:pos * ub + spec.w_width])
                term = spec.term(m, v_row[lane], w, f"l{p}_{lane}")
                term_q = Signal(term.shape(), name=f"term{p}_{lane}")
                with m.If(ce):
                    m.d.sync += term_q.eq(term)
                terms.append((term_q, spec.term_range))
            rowsum = [_lincomb(m, at[bb], terms, f"s{p}_{bb}") for bb in range(2)]
            ys = []
            for aa in range(2):
                for bb in range(2):
                    acc = Signal(elem_shape(*self.y_acc_ranges[aa][bb]), name=f"y{p}_{aa}{bb}")
                    s_val, (s_lo, s_hi) = rowsum[bb]
                    # acc ± (s << k) or acc + 0 by the row's coefficient, as one adder: the
                    # negation is ~s with the carry in (no subtractor, no mux of ±s).
                    neg, nz, sh = Signal(name=f"neg{p}_{aa}{bb}"), Signal(name=f"nz{p}_{aa}{bb}"), Signal(range(2))
                    with m.Switch(terms_row):
                        for i in range(4):
                            with m.Case(i):
                                c_ = int(at[aa, i])
                                m.d.comb += [neg.eq(c_ < 0), nz.eq(c_ != 0), sh.eq(abs(c_) == 2)]
                    mags = [abs(int(at[aa, i])) for i in range(4)]
                    scaled = Signal(elem_shape(min(0, 2 * s_lo), max(0, 2 * s_hi)) if 2 in mags else s_val.shape(),
                                    name=f"ss{p}_{aa}{bb}")
                    m.d.comb += scaled.eq(Mux(sh, s_val << 1, s_val) if 2 in mags else s_val)
                    width = max(len(acc), len(scaled)) + 1
                    ext = Signal(Shape(width, True), name=f"sx{p}_{aa}{bb}")
                    term = Signal(Shape(width, True), name=f"inc{p}_{aa}{bb}")
                    m.d.comb += [ext.eq(scaled), term.eq(Mux(nz, Mux(neg, ~ext, ext), 0))]
                    with m.If(ce & terms_valid):
                        m.d.sync += acc.eq(Mux(terms_first & (terms_row == 0), 0, acc) + term + (nz & neg))
                    ys.append(acc)
            y_accs.append(ys)

        y_busy, rq_k = Signal(), Signal(2)  # rq_k: the tile value in the requantizers
        y_g = Signal.like(g)
        y_free, take_rq = Signal(), Signal()
        y_range = self.y_range
        y_hold = []
        for p in range(pe):
            regs = [Signal(elem_shape(*y_range), name=f"yh{p}_{k}") for k in range(4)]
            with m.If(ce & m_done):
                # The complete values lie in y_range, inside the accumulators' partial-sum bound.
                m.d.sync += [r.eq(y) for r, y in zip(regs, y_accs[p])]
            y_hold.append(regs)

        rqs = []
        for p in range(pe):
            r = Requant(self.requant, [gg * pe + p for gg in range(G)], y_range, negate=True, slots=self.rq_slots)
            m.submodules[f"rq{p}"] = r
            xsel = Signal(elem_shape(*y_range), name=f"rqx{p}")
            with m.Switch(rq_k):
                for k in range(4):
                    with m.Case(k):
                        m.d.comb += xsel.eq(y_hold[p][k])
            m.d.comb += [r.en.eq(ce_out), r.valid.eq(y_busy), r.x.eq(xsel), r.sel.eq(y_g)]
            rqs.append(r)
        m.d.comb += [take_rq.eq(ce_out & y_busy & rqs[0].ready),
                     y_free.eq(~y_busy | (take_rq & (rq_k == 3))),
                     ce.eq(ce_out & ~(m_done & ~y_free))]
        with m.If(take_rq):
            m.d.sync += rq_k.eq(rq_k + 1)
            with m.If(rq_k == 3):
                m.d.sync += y_busy.eq(0)
        with m.If(ce & m_done):
            m.d.sync += [y_busy.eq(1), rq_k.eq(0), y_g.eq(m_g)]

        # ---------------------------------------------------------------- output reorder
        m.submodules.reorder = reorder = TileReorder(out_elem=self.out_elem, pe=pe, groups=G,
                                                     tiles=(TH, TW), out_hw=(OH, OW))
        y_valid = rqs[0].y_valid
        m.d.comb += [reorder.y.eq(Cat(*(r.y for r in rqs))), reorder.y_valid.eq(y_valid),
                     reorder.y_group.eq(rqs[0].y_sel),
                     ce_out.eq(~y_valid | reorder.y_ready)]
        wiring.connect(m, reorder.o, wiring.flipped(self.o))
        return m


def _slot_base(m: Module, slot, slots: int, width: int, name: str):
    """``slot * width`` for a slot counter, as a small table (no multiplier)."""
    base = Signal(range(slots * width), name=name)
    with m.Switch(slot):
        for r in range(slots):
            with m.Case(r):
                m.d.comb += base.eq(r * width)
    return base
