"""The Winograd-AdderNet tile engine: F(2×2, 3×3) with the element-wise product replaced by
an l1 distance, streaming like the direct engines (:class:`~hwgen.hw.conv.ConvEngine`)."""

from __future__ import annotations

import numpy as np
from amaranth import Cat, Const, Module, Mux, Shape, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .. import ir
from . import constructing
from .pe import Lane
from .requant import Requant, requant_shape

__all__ = ["WinogradEngine", "winograd_candidates", "winograd_folding", "estimate_winograd_luts", "KIND",
           "LANES"]

KIND = "winograd_adder_conv2d"
#: l1 lanes per PE: one row of the 4×4 tile per cycle, the four rows in the four cycles the
#: next tile's columns take to load.
LANES = 4
#: Weight ROMs of at least this many bits are put in block RAM (as the direct engines do).
ROM_BLOCK_BITS = 1024
#: Default LUT budget of one engine (as :data:`hwgen.hw.conv.LUT_BUDGET`).
LUT_BUDGET = 1200


def _shape(lo: int, hi: int) -> Shape:
    width, is_signed = ir.bits_for(int(lo), int(hi))
    return Shape(width, is_signed)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _bits(n: int) -> int:
    """Bits of a counter over ``range(n)`` used as an address field (0 for ``n == 1``)."""
    return max(0, (n - 1).bit_length())


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
    s = Signal(_shape(lo, hi), name=name)
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


def _slots(requant) -> int:
    return max(1, max(len(ir.csd(int(v))) for v in requant.mult))


def _cycles(layer, in_shape, requant, pe: int) -> int:
    o, c, th, tw, oh, ow = _tiles(layer, in_shape)
    groups = o // pe
    compute = tw * groups * LANES * max(c, _slots(requant))
    emit = min(2, oh) * ow * (groups + 2)
    return th * max(compute, emit)


def estimate_winograd_luts(layer, in_shape, in_range, requant, pe: int) -> int:
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
    input_transform = 20 * vb
    schedule = 350 + 2 * o * requant.out_bits // max(1, pe) + o * requant.out_bits
    return int(pe * (lanes + acc + out_transform + rq) + input_transform + schedule)


def winograd_candidates(layer, in_shape, in_range, requant) -> list[tuple[int, int, int, int]]:
    """``(cycles per image, estimated LUTs, pe, LANES)`` of every folding of the engine."""
    _check_layer(layer, in_shape)
    o = layer.u.shape[0]
    return [(_cycles(layer, in_shape, requant, pe), estimate_winograd_luts(layer, in_shape, in_range, requant, pe),
             pe, LANES) for pe in _divisors(o)]


def winograd_folding(layer, in_shape, in_range, requant, lut_budget: int = LUT_BUDGET,
                     target_cycles: int | None = None) -> int:
    """``pe`` of a :class:`WinogradEngine`, chosen like :func:`hwgen.hw.conv.default_folding`."""
    cands = winograd_candidates(layer, in_shape, in_range, requant)
    fit = [cand for cand in cands if cand[1] <= lut_budget]
    if not fit:
        best = min(cands, key=lambda t: (t[1], t[0]))
    elif target_cycles is not None and any(cand[0] <= target_cycles for cand in fit):
        best = min((cand for cand in fit if cand[0] <= target_cycles), key=lambda t: (t[1], t[0]))
    else:
        best = min(fit, key=lambda t: (t[0], t[1]))
    return best[2]


class WinogradEngine(wiring.Component):
    """Winograd-AdderNet F(2×2, 3×3) convolution + fused per-channel requantization, streaming.

    ``Y[o] = at · (-Σ_c |u[o, c] - bt · d_c · btᵀ|) · atᵀ`` for every 4×4 input tile ``d``
    stepping by 2 (:class:`hwgen.ir.WinogradAdderConv2d`, exactly as :func:`hwgen.golden.winograd_adder`:
    zero padding, and an odd output size completed to whole tiles with zeros and cropped), then
    ``requant``.  Pixels in and out in raster order, like every engine.

    Structure, in pipeline order:

    * **Tile window.**  A line buffer of ``R = max(4, min(6, H))`` input rows, one
      :class:`~amaranth.lib.memory.Memory` word per channel of a pixel, with four read ports
      (one per tile row): a cycle reads one column of the 4×4 tile of one channel (taps outside
      the image read 0).  Tiles are visited in raster order, for each the output-channel groups,
      for each the input channels: a *beat* (tile, group, channel) is four cycles.
    * **Input transform**, adders only: each column is transformed as it arrives
      (``t_j = bt · d[:, j]``), and with the fourth column ``V = [t_0 … t_3] · btᵀ`` is latched.
      ``V`` is exactly ``bits_for`` of :meth:`~hwgen.ir.WinogradAdderConv2d.v_range` wide.
    * **l1 lanes.**  ``pe`` PEs of :data:`LANES` lanes: during the four cycles the next beat
      loads, lane ``l`` of PE ``p`` computes ``|u[g·pe + p, c, r, l] - V[r, l]|`` for rows
      ``r = 0..3``, ``u`` read from a ROM (``pe·4`` words of ``u`` per address, block RAM when
      large), and adds it to one of the PE's 16 accumulators (restarted by the first channel).
    * **Output transform**, adders only: after the last channel the 2×2 tile
      ``at · M · atᵀ`` of every PE is latched (in magnitudes; the requantizer negates).
    * **Requantization**: one sequential :class:`~hwgen.hw.requant.Requant` per PE takes the
      four values of its tile one after the other.
    * **Output reorder**: the results go into a double-buffered memory of two tile rows' output
      (one word = the ``pe`` values of one requantization step); a reader gathers the ``O``
      channels of each output pixel and sends the pixels in raster order, cropping an odd size.

    Every width is exact for the layer: ``V`` per lane, the lanes' differences, the
    accumulators (the largest ``Σ_c |u - V|`` of each lane), the output transform stage by stage.

    Parameters
    ----------
    layer : :class:`hwgen.ir.WinogradAdderConv2d`
    requant : :class:`hwgen.ir.Requant` with ``O`` channels
    in_shape : (C, H, W)
    in_range : (int, int)
        Exact interval of the inputs.
    pe : int, optional
        Output channels in parallel (divides ``O``); default :func:`winograd_folding`.

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
                 *, pe: int | None = None):
        with constructing(self):
            if not isinstance(requant, ir.Requant):
                raise TypeError(f"requant must be an hwgen.ir.Requant, not {type(requant).__name__}")
            in_shape = tuple(int(v) for v in in_shape)
            _check_layer(layer, in_shape)
            o, c, th, tw, oh, ow = _tiles(layer, in_shape)
            if len(requant.mult) != o:
                raise ValueError(f"{requant.name}: {len(requant.mult)} channels, {layer.name} has {o} outputs")
            lo, hi = (int(v) for v in in_range)
            if lo > hi:
                raise ValueError(f"empty in_range {in_range}")
            if pe is None:
                pe = winograd_folding(layer, in_shape, (lo, hi), requant)
            if not isinstance(pe, int) or isinstance(pe, bool) or pe < 1 or o % pe:
                raise ValueError(f"{layer.name}: pe={pe!r} must divide the {o} output channels "
                                 f"(one of {_divisors(o)})")
            self.layer, self.requant = layer, requant
            self.in_shape, self.in_range = in_shape, (lo, hi)
            self.weight = layer.u  # (O, C, 4, 4): for code that reads any engine's weights
            self.padding = int(layer.padding)
            self.pe, self.groups = pe, o // pe
            self.O, self.C = o, c
            self.TH, self.TW = th, tw
            self.out_hw = (oh, ow)
            self.in_elem = _shape(lo, hi)
            self.out_elem = requant_shape(requant)
            self.rq_slots = _slots(requant)
            self._ranges()
            self.u_width = max(lane.w_width for lane in self.lanes)
            # Issue → V (2) → four rows (4) → term, accumulate, transform (3) → four values
            # through the requantizer → the tile row's first pixel gathered (G + 2).
            self.latency = 9 + LANES * self.rq_slots + self.groups + 2
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(self.in_elem, c))),
            "o": Out(stream.Signature(data.ArrayLayout(self.out_elem, o))),
        })

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
        u = layer.u
        self.lanes = [Lane("l1", _union([self.v_ranges[i][l] for i in range(4)]),
                           (int(u[..., l].min()), int(u[..., l].max()))) for l in range(LANES)]
        m_lo, m_hi = layer.lane_range(*self.in_range)   # M = -Σ|u - V|, (O, 4, 4)
        # Accumulator (i, l): every partial sum over the channels lies in [0, max_o worst].
        self.acc_max = [[int(-m_lo[:, i, l].min()) for l in range(4)] for i in range(4)]
        self.mag_ranges = [[(int(-m_hi[:, i, l].max()), self.acc_max[i][l]) for l in range(4)] for i in range(4)]

    @property
    def cycles_per_image(self) -> int:
        return _cycles(self.layer, self.in_shape, self.requant, self.pe)

    @property
    def params(self) -> dict:
        return {
            "pe": self.pe, "lanes": LANES, "lane": "l1", "tile": "F(2x2,3x3)", "groups": self.groups,
            "in_bits": self.in_elem.width, "weight_bits": self.u_width,
            "v_bits": max(ir.bits_for(*r)[0] for row in self.v_ranges for r in row),
            "acc_bits": max(ir.bits_for(0, v)[0] for row in self.acc_max for v in row),
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
        ub = self.u_width
        out = []
        for row in self.u_words():
            word = 0
            for pos, v in enumerate(row.reshape(-1)):
                word |= int(v) << (pos * ub)
            out.append(word)
        return out

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
        R = max(4, min(6, H))
        sb = _bits(C)  # a word is one channel of a pixel: address Cat(channel, pixel)
        m.submodules.lines = lines = Memory(shape=unsigned(eb), depth=(R * W) << sb, init=[],
                                            attrs={"no_rw_check": 1})
        wp = lines.write_port()
        rps = [lines.read_port() for _ in range(4)]

        # Issue state: tile (ty, tx), group g, channel c, column j.
        ty, tx = Signal(range(TH)), Signal(range(TW))
        g, ch, j = Signal(range(G)), Signal(range(C)), Signal(2)
        widx = Signal(range(G * C))              # g * C + c: the beat's u address / 4
        row_slot = Signal(range(R), init=(-pad) % R)  # slot of input row 2*ty - pad
        wr_addr, wr_x = Signal(range(R * W)), Signal(range(W))
        wr_ahead = Signal(range(H + R + 1))     # full rows written, counted from the reader's image

        top = Signal(range(2 * TH + 4))
        m.d.comb += top.eq((ty << 1) + (4 - pad))
        need = Mux(top > H, H, top)
        low = Signal(range(H + 1))
        m.d.comb += low.eq(Mux((ty << 1) > pad, (ty << 1) - pad, 0))
        issue = Signal()
        m.d.comb += issue.eq(ce & (wr_ahead >= need))
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
                            m.d.sync += [tx.eq(0), ty.eq(ty + 1), row_slot.eq(_add_mod(row_slot, 2 % R, R))]
                            with m.If(last_y):
                                m.d.sync += [ty.eq(0),
                                             row_slot.eq(_add_mod(row_slot, (H - 2 * (TH - 1)) % R, R))]

        # Writer: a pixel's channels one per cycle, the pixel taken with the last.
        space = Signal()
        m.d.comb += space.eq(wr_ahead < low + R)
        wr_ch = Signal(range(C))
        take = Signal()
        m.d.comb += [
            wp.addr.eq(Cat(wr_ch, wr_addr) if sb else wr_addr),
            wp.data.eq(self.i.payload.as_value().word_select(wr_ch, eb) if C > 1 else self.i.payload.as_value()),
            wp.en.eq(self.i.valid & space),
            self.i.ready.eq(space & (wr_ch == C - 1)),
            take.eq(self.i.valid & self.i.ready),
        ]
        if C > 1:
            with m.If(wp.en):
                m.d.sync += wr_ch.eq(Mux(wr_ch == C - 1, 0, wr_ch + 1))
        with m.If(take):
            m.d.sync += [wr_x.eq(wr_x + 1), wr_addr.eq(wr_addr + 1)]
            with m.If(wr_x == W - 1):
                m.d.sync += wr_x.eq(0)
            with m.If(wr_addr == R * W - 1):
                m.d.sync += wr_addr.eq(0)
        m.d.sync += wr_ahead.eq(wr_ahead + (take & (wr_x == W - 1)) - Mux(finish, H, 0))

        # Read addresses: port i reads row 2*ty - pad + i, column 2*tx - pad + j, channel c.
        ix = Signal(range(-pad, 2 * TW + 4))
        m.d.comb += ix.eq((tx << 1) + j - pad)
        inside_q = [Signal(name=f"inside{i}_q") for i in range(4)]
        for i, rp in enumerate(rps):
            iy = Signal(range(-pad, 2 * TH + 4), name=f"iy{i}")
            m.d.comb += iy.eq((ty << 1) + (i - pad))
            inside = (iy >= 0) & (iy < H) & (ix >= 0) & (ix < W)
            slot = Signal(range(R), name=f"slot{i}")
            m.d.comb += slot.eq(_add_mod(row_slot, i, R))
            base = Signal(range(R * W), name=f"base{i}")
            with m.Switch(slot):
                for r in range(R):
                    with m.Case(r):
                        m.d.comb += base.eq(r * W)
            pixel = (base + ix.as_unsigned())[:len(wr_addr)]
            m.d.comb += [rp.addr.eq(Cat(ch, pixel) if sb else pixel), rp.en.eq(ce)]
            with m.If(ce):
                m.d.sync += inside_q[i].eq(inside)

        # ---------------------------------------------------------------- input transform
        v1, j1 = Signal(), Signal(2)
        first1, last1 = Signal(), Signal()
        widx1, g1 = Signal.like(widx), Signal.like(g)
        with m.If(ce):
            m.d.sync += [v1.eq(issue), j1.eq(j), first1.eq(ch == 0), last1.eq(last_c), widx1.eq(widx), g1.eq(g)]
        d_range = (min(self.in_range[0], 0), max(self.in_range[1], 0))
        col = []
        for i, rp in enumerate(rps):
            s = Signal(self.in_elem, name=f"col{i}")
            m.d.comb += s.eq(Mux(inside_q[i], rp.data, 0))
            col.append((s, d_range))
        t = [_lincomb(m, bt[i], col, f"t{i}") for i in range(4)]   # this column's transform
        tcols = []
        for jj in range(3):
            regs = [Signal(t[i][0].shape(), name=f"t{jj}_{i}") for i in range(4)]
            with m.If(ce & v1 & (j1 == jj)):
                m.d.sync += [r.eq(t[i][0]) for i, r in enumerate(regs)]
            tcols.append([(r, t[i][1]) for i, r in enumerate(regs)])
        tcols.append(t)
        latch = Signal()
        m.d.comb += latch.eq(v1 & (j1 == 3))
        v_hold = [[None] * 4 for _ in range(4)]
        for i in range(4):
            for lane in range(4):
                v, vr = _lincomb(m, bt[lane], [tcols[jj][i] for jj in range(4)], f"v{i}_{lane}")
                assert vr == self.v_ranges[i][lane]
                reg = Signal(v.shape(), name=f"vh{i}_{lane}")
                with m.If(ce & latch):
                    m.d.sync += reg.eq(v)
                v_hold[i][lane] = reg

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

        ub = self.u_width
        depth = G * C * 4
        wbits = pe * LANES * ub
        attrs = {"rom_style": "block"} if wbits * depth >= ROM_BLOCK_BITS else {}
        m.submodules.rom = rom = Memory(shape=unsigned(wbits), depth=depth, init=self.u_rom(), attrs=attrs)
        rrp = rom.read_port()
        next_r = Signal(2)
        m.d.comb += next_r.eq(lane_r + 1)
        m.d.comb += [rrp.addr.eq(Mux(latch, Cat(Const(0, 2), widx1), Cat(next_r, lane_widx))), rrp.en.eq(ce)]

        tv, tr = Signal(), Signal(2)
        tfirst, tlast, tg = Signal(), Signal(), Signal.like(g)
        with m.If(ce):
            m.d.sync += [tv.eq(lane_on), tr.eq(lane_r), tfirst.eq(lane_first), tlast.eq(lane_last), tg.eq(lane_g)]
        m_done, m_g = Signal(), Signal.like(g)
        with m.If(ce):
            m.d.sync += [m_done.eq(tv & tlast & (tr == 3)), m_g.eq(tg)]

        accs = []  # per PE: 4×4 accumulators (magnitudes Σ_c |u - V|)
        for p in range(pe):
            acc = [[Signal(_shape(0, self.acc_max[i][lane]), name=f"m{p}_{i}_{lane}") for lane in range(4)]
                   for i in range(4)]
            for lane in range(LANES):
                spec = self.lanes[lane]
                x = Signal(spec.x_shape, name=f"x{p}_{lane}")
                with m.Switch(lane_r):
                    for i in range(4):
                        with m.Case(i):
                            m.d.comb += x.eq(v_hold[i][lane])
                w = Signal(spec.w_layout, name=f"u{p}_{lane}")
                pos = p * LANES + lane
                m.d.comb += w.eq(rrp.data[pos * ub:pos * ub + spec.w_width])
                term = spec.term(m, x, w, f"l{p}_{lane}")
                term_q = Signal(term.shape(), name=f"term{p}_{lane}")
                with m.If(ce):
                    m.d.sync += term_q.eq(term)
                # The accumulator of row tr: restart on the first channel, else add.
                cur = Signal(_shape(0, max(self.acc_max[i][lane] for i in range(4))), name=f"cur{p}_{lane}")
                with m.Switch(tr):
                    for i in range(4):
                        with m.Case(i):
                            m.d.comb += cur.eq(acc[i][lane])
                total = Mux(tfirst, 0, cur) + term_q
                with m.If(ce & tv):
                    with m.Switch(tr):
                        for i in range(4):
                            with m.Case(i):
                                m.d.sync += acc[i][lane].eq(total)
            accs.append(acc)

        # ---------------------------------------------------------------- output transform
        y_busy, kf = Signal(), Signal(2)
        y_g = Signal.like(g)
        y_free, take_rq = Signal(), Signal()
        y_hold, y_range = [], None
        for p in range(pe):
            acc = accs[p]
            rows = []
            for i in range(4):
                vals = [(acc[i][lane], self.mag_ranges[i][lane]) for lane in range(4)]
                rows.append([_lincomb(m, at[b], vals, f"s{p}_{i}_{b}") for b in range(2)])
            ys = []
            for a in range(2):
                for b in range(2):
                    y, yr = _lincomb(m, at[a], [rows[i][b] for i in range(4)], f"y{p}_{a}{b}")
                    reg = Signal(y.shape(), name=f"yh{p}_{a}{b}")
                    with m.If(ce & m_done):
                        m.d.sync += reg.eq(y)
                    ys.append((reg, yr))
                    y_range = yr if y_range is None else _union([y_range, yr])
            y_hold.append(ys)
        self.y_range = y_range

        rqs = []
        for p in range(pe):
            r = Requant(self.requant, [gg * pe + p for gg in range(G)], y_range, negate=True, slots=self.rq_slots)
            m.submodules[f"rq{p}"] = r
            xsel = Signal(_shape(*y_range), name=f"rqx{p}")
            with m.Switch(kf):
                for k in range(4):
                    with m.Case(k):
                        m.d.comb += xsel.eq(y_hold[p][k][0])
            m.d.comb += [r.en.eq(ce_out), r.valid.eq(y_busy), r.x.eq(xsel), r.sel.eq(y_g)]
            rqs.append(r)
        m.d.comb += [take_rq.eq(ce_out & y_busy & rqs[0].ready),
                     y_free.eq(~y_busy | (take_rq & (kf == 3))),
                     ce.eq(ce_out & ~(m_done & ~y_free))]
        with m.If(take_rq):
            m.d.sync += kf.eq(kf + 1)
            with m.If(kf == 3):
                m.d.sync += y_busy.eq(0)
        with m.If(ce & m_done):
            m.d.sync += [y_busy.eq(1), kf.eq(0), y_g.eq(m_g)]

        # ---------------------------------------------------------------- output reorder
        ob = self.out_elem.width
        xb, gb = max(1, _bits(2 * TW)), _bits(G)
        m.submodules.obuf = omem = Memory(shape=unsigned(pe * ob), depth=4 << (xb + gb), init=[],
                                          attrs={"no_rw_check": 1})
        owp, orp = omem.write_port(), omem.read_port()
        full = Signal(range(3))
        wbank, kw, tx_w = Signal(), Signal(2), Signal(range(TW))
        y_valid, y_sel = rqs[0].y_valid, rqs[0].y_sel
        wen = Signal()
        m.d.comb += [ce_out.eq(~(y_valid & (full == 2))), wen.eq(y_valid & (full != 2))]
        xw = Signal(xb)  # the column 2*tx + b, in a field of xb bits (as the reader's)
        m.d.comb += xw.eq(Cat(kw[0], tx_w))
        m.d.comb += [owp.addr.eq(Cat(y_sel, xw, kw[1], wbank) if gb else Cat(xw, kw[1], wbank)),
                     owp.data.eq(Cat(*(r.y for r in rqs))), owp.en.eq(wen)]
        row_written = Signal()
        with m.If(wen):
            m.d.sync += kw.eq(kw + 1)
            with m.If((kw == 3) & (y_sel == G - 1)):
                m.d.sync += tx_w.eq(tx_w + 1)
                with m.If(tx_w == TW - 1):
                    m.d.sync += [tx_w.eq(0), wbank.eq(~wbank)]
                    m.d.comb += row_written.eq(1)

        # Reader: per output pixel, G words (one per group) into the output register.
        rbank, ra, rx, rt = Signal(), Signal(), Signal(range(OW)), Signal(range(TH))
        gi, gq = Signal(range(G)), Signal(range(G))
        dq, waiting = Signal(), Signal()
        layout = data.ArrayLayout(self.out_elem, self.O)
        obuf = Signal(layout)
        ovalid = Signal()
        m.d.comb += [self.o.valid.eq(ovalid), self.o.payload.eq(obuf)]
        rxf = Signal(xb)
        m.d.comb += rxf.eq(rx)
        m.d.comb += [orp.addr.eq(Cat(gi, rxf, ra, rbank) if gb else Cat(rxf, ra, rbank)),
                     orp.en.eq(~waiting & (full != 0))]
        m.d.sync += dq.eq(orp.en)
        with m.If(orp.en):
            m.d.sync += [gq.eq(gi), gi.eq(gi + 1)]
            with m.If(gi == G - 1):
                m.d.sync += [gi.eq(0), waiting.eq(1)]
        with m.If(dq):
            bits = obuf.as_value()
            if G == 1:
                m.d.sync += bits.eq(orp.data)
            else:
                with m.Switch(gq):
                    for gg in range(G):
                        with m.Case(gg):
                            m.d.sync += bits[gg * pe * ob:(gg + 1) * pe * ob].eq(orp.data)
            with m.If(gq == G - 1):
                m.d.sync += ovalid.eq(1)
        bank_done = Signal()
        with m.If(ovalid & self.o.ready):
            m.d.sync += [ovalid.eq(0), waiting.eq(0), rx.eq(rx + 1)]
            with m.If(rx == OW - 1):
                m.d.sync += [rx.eq(0), ra.eq(~ra)]
                last_row = (ra == 1) | (rt == TH - 1) if OH % 2 else ra == 1
                with m.If(last_row):
                    m.d.sync += [ra.eq(0), rbank.eq(~rbank), rt.eq(Mux(rt == TH - 1, 0, rt + 1))]
                    m.d.comb += bank_done.eq(1)
        m.d.sync += full.eq(full + row_written - bank_done)
        return m


def _add_mod(a, b: int, r: int):
    """``(a + b) mod r`` for ``a`` in ``[0, r)`` and a constant ``b`` in ``[0, r)``, with one compare."""
    s = a + b
    return Mux(s >= r, s - r, s)
