"""The Winograd-AdderNet tile engine: F(2×2, 3×3) with the element-wise product replaced by
an l1 distance, streaming like the direct engines (:class:`~hwgen.hw.conv.ConvEngine`)."""

from __future__ import annotations

import numpy as np
from amaranth import Cat, Module, Mux, Shape, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .. import ir
from . import constructing, divisors, elem_shape, ice40_blocks
from .conv import LUT_BUDGET, ROM_BLOCK_BITS, check_io, choose_folding, pack_words, requant_slots
from .pe import Lane
from .requant import Requant, requant_shape
from .winograd_buffer import TilePairBuffer
from .winograd_reorder import TileReorder
from .winograd_transform import InputTransform, lincomb, transform_ranges

__all__ = ["WinogradEngine", "winograd_candidates", "winograd_folding", "estimate_winograd_luts", "KIND",
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


def _cycles(layer, in_shape, requant, pe: int, overlap: bool = True) -> int:
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
    return [(_cycles(layer, in_shape, requant, pe, bool(ov)),
             estimate_winograd_luts(layer, in_shape, in_range, requant, pe, bool(ov)), pe, ov)
            for pe in divisors(o) for ov in (1, 0)]


def winograd_folding(layer, in_shape, in_range, requant, lut_budget: int = LUT_BUDGET,
                     target_cycles: int | None = None) -> tuple[int, bool]:
    """``(pe, overlap)`` of a :class:`WinogradEngine`, chosen like
    :func:`hwgen.hw.conv.default_folding` (:func:`hwgen.hw.conv.choose_folding`)."""
    cands = winograd_candidates(layer, in_shape, in_range, requant)
    pe, overlap = choose_folding(cands, lut_budget, target_cycles)
    return pe, bool(overlap)


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
    pe : int, optional
        Output channels in parallel (divides ``O``); default :func:`winograd_folding`.
    overlap : bool, optional
        Hold a second copy of the tile's column transforms so the next beat loads while the
        lanes work (a beat every 4 cycles), or not (every 7 cycles, sixteen registers fewer);
        default :func:`winograd_folding`.

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
                 *, pe: int | None = None, overlap: bool | None = None):
        with constructing(self):
            if not isinstance(requant, ir.Requant):
                raise TypeError(f"requant must be an hwgen.ir.Requant, not {type(requant).__name__}")
            in_shape = tuple(int(v) for v in in_shape)
            _check_layer(layer, in_shape)
            o, c, th, tw, oh, ow = _tiles(layer, in_shape)
            lo, hi = check_io(layer, requant, o, in_range)
            if pe is None or overlap is None:
                d_pe, d_overlap = winograd_folding(layer, in_shape, (lo, hi), requant)
                pe = d_pe if pe is None else pe
                overlap = d_overlap if overlap is None else overlap
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

    def _ranges(self):
        """Exact intervals of every stage, from the input interval and ``u``."""
        layer = self.layer
        bt, at = layer.bt, layer.at
        d_range = (min(self.in_range[0], 0), max(self.in_range[1], 0))
        self.t_ranges, self.v_ranges = transform_ranges(bt, d_range)
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
        return _cycles(self.layer, self.in_shape, self.requant, self.pe, self.overlap)

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

        ce = Signal()      # clock enable of the tile side: issue, transforms, lanes, accumulators
        ce_out = Signal()  # clock enable of the requantizers (stops while a result cannot be stored)

        # ---------------------------------------------------------------- tile-pair buffer
        m.submodules.tiles = tiles = TilePairBuffer(channels=C, height=H, width=W, padding=pad,
                                                    elem_shape=self.in_elem, groups=G)
        wiring.connect(m, wiring.flipped(self.i), tiles.i)
        m.d.comb += tiles.en.eq(ce)

        # ---------------------------------------------------------------- input transform
        m.submodules.transform = transform = InputTransform(
            bt=bt, in_range=self.in_range, overlap=self.overlap, beats=G * C, groups=G)
        wiring.connect(m, tiles.columns, transform.columns)
        m.d.comb += transform.en.eq(ce)
        rows = transform.rows

        # ---------------------------------------------------------------- l1 lanes
        v_row = []
        for lane in range(LANES):
            x = Signal(self.lanes[lane].x_shape, name=f"v{lane}")
            m.d.comb += x.eq(rows.v[lane])  # inside the lane's union over the rows
            v_row.append(x)
        lane_on, lane_r, lane_first, lane_last, lane_g = (rows.valid, rows.row, rows.first,
                                                          rows.last, rows.group)

        ub = self.u_width
        depth = G * C * 4
        wbits = pe * LANES * ub
        m.submodules.rom = rom = Memory(shape=unsigned(wbits), depth=depth, init=self.u_rom(),
                                         attrs=rom_attrs(wbits, depth))
        rrp = rom.read_port()
        m.d.comb += [rrp.addr.eq(rows.u_addr), rrp.en.eq(ce)]

        terms_valid, terms_row = Signal(), Signal(2)
        terms_first, terms_last, terms_group = Signal(), Signal(), Signal.like(lane_g)
        with m.If(ce):
            m.d.sync += [terms_valid.eq(lane_on), terms_row.eq(lane_r), terms_first.eq(lane_first),
                         terms_last.eq(lane_last), terms_group.eq(lane_g)]
        m_done, m_g = Signal(), Signal.like(lane_g)
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
            rowsum = [lincomb(m, at[bb], terms, f"s{p}_{bb}") for bb in range(2)]
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
        y_g = Signal.like(lane_g)
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

