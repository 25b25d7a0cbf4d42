"""The tile-pair buffer of the Winograd tile engine: input pixels in, columns of 4×4 tiles out."""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Shape, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from . import constructing
from .window import add_mod, count_rows, inside_image, rows_ready, slot_base

__all__ = ["TilePairBuffer", "column_signature"]

#: Row-pair slots of the line buffer: the two pairs a tile reads and the two being written.
PAIR_SLOTS = 4


def column_signature(elem_shape, *, beats: int, groups: int) -> wiring.Signature:
    """The columns of 4×4 tiles, one per enabled cycle, from :class:`TilePairBuffer` to the
    input transform (:class:`~hwgen.hw.winograd_transform.InputTransform`).

    ``data``: the four rows of column ``index`` of one channel's tile (zero padding included);
    ``valid``: ``data`` is a column; ``first`` / ``last``: the beat is the first / last input
    channel of its pass; ``beat``: ``group · C + channel``; ``group``: the output-channel group
    the pass serves.  ``hold`` (from the consumer): a new beat (its column 0) must not be issued.
    """
    return wiring.Signature({
        "data": Out(data.ArrayLayout(elem_shape, 4)),
        "valid": Out(1), "index": Out(2), "first": Out(1), "last": Out(1),
        "beat": Out(range(beats)), "group": Out(range(groups)),
        "hold": In(1),
    })


def _positive(name: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise TypeError(f"{name} must be a positive integer, not {value!r}")
    return value


class TilePairBuffer(wiring.Component):
    """Line buffer of input row pairs plus the schedule of the 4×4 tiles (step 2) of a
    Winograd F(2×2, 3×3) convolution.

    A :class:`~amaranth.lib.memory.Memory` word holds one channel of one pixel in two input
    rows: the rows ``2q - padding`` and ``2q - padding + 1`` of an image form its pair ``q``,
    so the four rows of a tile are two pairs, read by two ports (two block-RAM copies on iCE40,
    not four).  Four pair slots: the two a tile reads and two that the next pairs (the next
    tile row, or the next image's first) are written into meanwhile.  The addressing
    (slot bases, padding test, rows-ready flow control) is the
    :class:`~hwgen.hw.window.WindowGenerator`'s.

    Tiles are visited in raster order, for each the ``groups`` output-channel groups, for each
    the ``channels`` input channels: a *beat* (tile, group, channel) is four columns, one per
    enabled cycle, each the four rows of one column of the channel's tile.  Taps outside the
    image (the padding, and the completion of an odd output size to whole tiles) read 0.

    Parameters (keyword-only)
    -------------------------
    channels, height, width : int
        Input map ``C × H × W``.
    padding : int
        0 or 1: zeros around the input (a 3×3 kernel).
    elem_shape : ShapeLike
        One input value.
    groups : int
        Passes over the input channels per tile.

    Members
    -------
    i : ``In(stream.Signature(ArrayLayout(elem_shape, C)))``
        Input pixels, raster order, images back to back; a pixel's channels are written one per
        cycle (``i.ready`` rises with the last), so the payload must stay put while
        ``i.valid`` waits, as the stream rules ask.
    en : ``In(1)``
        Clock enable of the tile side (the consumer's stall); the input side ignores it.
    columns : ``Out(column_signature(elem_shape, beats=groups · C, groups=groups))``

    Timing
    ------
    A column per enabled cycle while the rows of the tile row have arrived and ``hold`` is low
    at a beat's start; a column leaves one enabled cycle after its issue (the memory read).
    ``tiles · groups · C · 4`` columns per image.  Input: a pixel per ``C`` cycles while a pair
    slot is free.
    """

    def __init__(self, *, channels: int, height: int, width: int, padding: int, elem_shape,
                 groups: int):
        with constructing(self):
            self._channels = _positive("channels", channels)
            self._height = _positive("height", height)
            self._width = _positive("width", width)
            self._groups = _positive("groups", groups)
            if isinstance(padding, bool) or padding not in (0, 1):
                raise ValueError(f"padding must be 0 or 1, not {padding!r}")
            self._padding = padding
            oh, ow = height + 2 * padding - 2, width + 2 * padding - 2
            if oh < 1 or ow < 1:
                raise ValueError(f"input {height}×{width} too small for a 3×3 kernel with "
                                 f"padding {padding}")
            self._tiles = ((oh + 1) // 2, (ow + 1) // 2)
            self._elem_shape = Shape.cast(elem_shape)
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(self._elem_shape, channels))),
            "en": In(1),
            "columns": Out(column_signature(self._elem_shape, beats=groups * channels,
                                            groups=groups)),
        })

    @property
    def tiles(self) -> tuple[int, int]:
        """``(TH, TW)``: tiles per image."""
        return self._tiles

    @property
    def columns_per_image(self) -> int:
        return self._tiles[0] * self._tiles[1] * self._groups * self._channels * 4

    def elaborate(self, platform):
        m = Module()
        C, H, W, pad, G = self._channels, self._height, self._width, self._padding, self._groups
        TH, TW = self._tiles
        eb = self._elem_shape.width
        en, out = self.en, self.columns
        slots, pairs = PAIR_SLOTS, (H + pad + 1) // 2

        # A word is one channel of two rows (the halves written separately); address
        # Cat(channel, slot * W + x).
        channel_bits = ceil_log2(C)
        m.submodules.lines = lines = Memory(shape=unsigned(2 * eb),
                                            depth=(slots * W) << channel_bits,
                                            init=[], attrs={"no_rw_check": 1})
        wp = lines.write_port(granularity=eb)
        rps = [lines.read_port() for _ in range(2)]

        # ---- issue state: tile (tile_y, tile_x), group, channel, column
        tile_y, tile_x = Signal(range(TH)), Signal(range(TW))
        group, channel, column = Signal(range(G)), Signal(range(C)), Signal(2)
        beat = Signal(range(G * C))           # group * C + channel
        read_slot = Signal(range(slots))      # slot of pair tile_y
        # ---- writer state: pixel, channel, image row and its half of the pair, the pair's slot
        wr_x, wr_ch = Signal(range(W)), Signal(range(C))  # wr_ch: the channel being written
        wr_row, wr_half = Signal(range(H)), Signal(init=pad % 2)
        wr_slot = Signal(range(slots))
        rows_written = Signal(range(H + 2 * slots + 1))  # counted from the reader's image
        pairs_written = Signal(range(pairs + slots + 1))  # likewise

        top = Signal(range(2 * TH + 4))  # one past the tile row's last image row
        m.d.comb += top.eq((tile_y << 1) + (4 - pad))
        issue = Signal()
        m.d.comb += issue.eq(en & rows_ready(m, rows_written, top, H)
                             & ~(out.hold & (column == 0)))
        last_column, last_channel, last_group = column == 3, channel == C - 1, group == G - 1
        last_x, last_y = tile_x == TW - 1, tile_y == TH - 1
        finish = Signal()  # the last column of an image is issued
        m.d.comb += finish.eq(issue & last_column & last_channel & last_group & last_x & last_y)
        with m.If(issue):
            m.d.sync += column.eq(column + 1)
            with m.If(last_column):
                m.d.sync += [channel.eq(channel + 1), beat.eq(beat + 1)]
                with m.If(last_channel):
                    m.d.sync += [channel.eq(0), group.eq(group + 1)]
                    with m.If(last_group):
                        m.d.sync += [group.eq(0), beat.eq(0), tile_x.eq(tile_x + 1)]
                        with m.If(last_x):
                            m.d.sync += [tile_x.eq(0), tile_y.eq(tile_y + 1),
                                         read_slot.eq(add_mod(read_slot, 1, slots))]
                            with m.If(last_y):
                                # The next image's pair 0: pairs - (TH - 1) pairs on.
                                m.d.sync += [tile_y.eq(0), read_slot.eq(
                                    add_mod(read_slot, (pairs - TH + 1) % slots, slots))]

        # ---- writer: a pixel's channels one per cycle, the pixel taken with the last; a row
        # into its half of the pair words; a pair slot is written once no tile reads it.
        space = Signal()
        m.d.comb += space.eq(pairs_written < tile_y + slots)
        take = Signal()
        wr_addr = Signal(range(slots * W))
        m.d.comb += wr_addr.eq(slot_base(m, wr_slot, slots, W, "wr_base") + wr_x)
        payload = self.i.payload.as_value()
        word = payload.word_select(wr_ch, eb) if C > 1 else payload
        m.d.comb += [
            wp.addr.eq(Cat(wr_ch, wr_addr) if channel_bits else wr_addr),
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
            m.d.sync += wr_slot.eq(add_mod(wr_slot, 1, slots))
        count_rows(m, rows_written, row_done, finish, H)
        m.d.sync += pairs_written.eq(pairs_written + pair_done - Mux(finish, pairs, 0))

        # ---- read addresses: port k reads pair tile_y + k (tile rows 2k, 2k + 1), image
        # column 2 * tile_x - pad + column; the padding test is registered with the read.
        ix = Signal(range(-pad, 2 * TW + 4))
        m.d.comb += ix.eq((tile_x << 1) + column - pad)
        inside_q = [Signal(name=f"inside{r}_q") for r in range(4)]
        for r in range(4):
            iy = Signal(range(-pad, 2 * TH + 4), name=f"iy{r}")
            m.d.comb += iy.eq((tile_y << 1) + (r - pad))
            with m.If(en):
                m.d.sync += inside_q[r].eq(inside_image(iy, ix, H, W))
        for k, rp in enumerate(rps):
            slot = Signal(range(slots), name=f"slot{k}")
            m.d.comb += slot.eq(add_mod(read_slot, k, slots))
            pixel = (slot_base(m, slot, slots, W, f"base{k}") + ix.as_unsigned())[:len(wr_addr)]
            m.d.comb += [rp.addr.eq(Cat(channel, pixel) if channel_bits else pixel), rp.en.eq(en)]

        # ---- one enabled cycle after issue: the column and its beat's tags
        with m.If(en):
            m.d.sync += [out.valid.eq(issue), out.index.eq(column), out.first.eq(channel == 0),
                         out.last.eq(last_channel), out.beat.eq(beat), out.group.eq(group)]
        for r in range(4):
            m.d.comb += out.data[r].eq(Mux(inside_q[r], rps[r // 2].data.word_select(r % 2, eb), 0))
        return m
