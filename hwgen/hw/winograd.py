"""The Winograd-AdderNet tile engine: F(2×2, 3×3) with the element-wise product replaced by
an l1 distance, streaming like the direct engines (:class:`~hwgen.hw.conv.ConvEngine`)."""

from __future__ import annotations

import numpy as np
from amaranth import Cat, Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .. import ir
from . import constructing, divisors, elem_shape
from .conv import check_io, pack_words, requant_slots
from .requant import Requant, requant_shape
from .winograd_buffer import TilePairBuffer
from .winograd_lanes import LANES, TileLanes, accumulator_ranges, lane_specs, u_words
from .winograd_reorder import TileReorder
from .winograd_requant import TileRequant
from .winograd_transform import InputTransform, transform_ranges

__all__ = ["WinogradEngine", "winograd_candidates", "winograd_cycles", "estimate_winograd_luts", "KIND",
           "LANES"]

KIND = "winograd_adder_conv2d"


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

    Structure, in pipeline order: five components, one per module, in one clock-enabled
    pipeline (the tile side stops when the requantization stage cannot take a tile).

    * **Tile-pair buffer** (:class:`~hwgen.hw.winograd_buffer.TilePairBuffer`).  A line buffer
      of four row-pair slots: a word holds one channel of one pixel in two input rows (the
      rows ``2q - pad`` and ``2q - pad + 1`` form pair ``q``), so the four rows of a tile are
      two pairs, read by two ports (two block-RAM copies on iCE40); its addressing is the
      window generator's (:mod:`hwgen.hw.window`).  Tiles are visited in raster order, for each
      the output-channel groups, for each the input channels: a *beat* (tile, group, channel)
      is four columns, one per cycle (taps outside the image read 0).
    * **Input transform** (:class:`~hwgen.hw.winograd_transform.InputTransform`), adders only:
      each column is transformed as it arrives (``t_j = bt · d[:, j]``); with the fourth the
      ``t_j`` are held, and during the next beat's four loading cycles row ``r`` of
      ``V = [t_0 … t_3] · btᵀ`` is formed, one row per cycle, by four adders shared by the rows.
    * **l1 lanes with the output transform** (:class:`~hwgen.hw.winograd_lanes.TileLanes`):
      ``pe`` PEs of :data:`~hwgen.hw.winograd_lanes.LANES` lanes; lane ``l`` of PE ``p`` computes
      ``|u[g·pe + p, c, r, l] - V[r, l]|`` for rows ``r = 0..3``, ``u`` read from a ROM
      (block RAM when large and well filled, :func:`~hwgen.hw.winograd_lanes.rom_attrs`).  The
      output transform is linear, so each row of terms is transformed as it comes,
      ``Y[a, b] += at[a, r] · Σ_l at[b, l] · term_l``, into four accumulators per PE, not
      sixteen and a transform at the end.  In magnitudes: the requantizer negates.
    * **Requantization** (:class:`~hwgen.hw.winograd_requant.TileRequant`): one sequential
      :class:`~hwgen.hw.requant.Requant` per PE takes the four values of its tile one after the
      other.
    * **Output reorder** (:class:`~hwgen.hw.winograd_reorder.TileReorder`): a double-buffered
      memory of two tile rows' output; a reader gathers the ``O`` channels of each output pixel
      and sends the pixels in raster order, cropping an odd size.

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
        self.t_ranges, self.v_ranges = transform_ranges(bt, d_range)
        v_lo, v_hi = layer.v_range(*self.in_range)
        assert all(self.v_ranges[i][l] == (int(v_lo[i, l]), int(v_hi[i, l])) for i in range(4) for l in range(4))
        u = layer.u.astype(np.int64)
        self.lanes = lane_specs(u, v_lo, v_hi)
        self.y_acc_ranges = accumulator_ranges(u, at, v_lo, v_hi)
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
        """Raw ``u`` words ``(groups * C * 4, pe, LANES)``
        (:func:`~hwgen.hw.winograd_lanes.u_words`)."""
        return u_words(self.layer.u, self.lanes, self.pe)

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

        # ---------------------------------------------------------------- tile-pair buffer
        m.submodules.tiles = tiles = TilePairBuffer(channels=C, height=H, width=W, padding=pad,
                                                    elem_shape=self.in_elem, groups=G)
        wiring.connect(m, wiring.flipped(self.i), tiles.i)

        # ---------------------------------------------------------------- input transform
        m.submodules.transform = transform = InputTransform(
            bt=bt, in_range=self.in_range, overlap=self.overlap, beats=G * C, groups=G)
        wiring.connect(m, tiles.columns, transform.columns)

        # ---------------------------------------------------------------- l1 lanes
        # with the output transform folded into their accumulators
        m.submodules.lanes = lanes = TileLanes(
            u=self.layer.u, v_range=self.layer.v_range(*self.in_range), at=at, pe=pe)
        wiring.connect(m, transform.rows, lanes.rows)

        # ---------------------------------------------------------------- requantization
        m.submodules.requant = requant = TileRequant(self.requant, pe=pe, in_range=self.y_range,
                                                     tile_shape=lanes.tile_shape,
                                                     slots=self.rq_slots)
        wiring.connect(m, lanes.tiles, requant.tiles)
        # The tile side moves with the requantizers, and waits while a tile cannot be held.
        m.d.comb += [tiles.en.eq(requant.tile_en), transform.en.eq(requant.tile_en),
                     lanes.en.eq(requant.tile_en)]

        # ---------------------------------------------------------------- output reorder
        m.submodules.reorder = reorder = TileReorder(out_elem=self.out_elem, pe=pe, groups=G,
                                                     tiles=(TH, TW), out_hw=(OH, OW))
        m.d.comb += [reorder.y.eq(requant.step), reorder.y_valid.eq(requant.step_valid),
                     reorder.y_group.eq(requant.step_group), requant.step_ready.eq(reorder.y_ready)]
        wiring.connect(m, reorder.o, wiring.flipped(self.o))
        return m

