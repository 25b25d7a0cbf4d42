"""The output reorder memory of the Winograd tile engine: tile order in, raster order out."""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Shape, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from . import constructing

__all__ = ["TileReorder"]


def _bits(n: int) -> int:
    """Bits of a counter over ``range(n)`` used as an address field (0 for ``n == 1``)."""
    return max(0, (n - 1).bit_length())


def _count(name: str, value, *, low: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name}={value!r} must be an int >= {low}")
    return value


class TileReorder(wiring.Component):
    """Double-buffered reorder memory: 2×2 output tiles in, output pixels in raster order out.

    The Winograd engine's requantizers deliver, per tile (in raster order of the
    ``tiles = (TH, TW)`` tiles), for each of the ``groups`` output-channel groups the four
    values ``k = 2a + b`` of the 2×2 tile (row ``a``, column ``b``), each step carrying the
    ``pe`` channels of one group.  A step is written into one of two banks, each holding one
    row of tiles (two output rows); a reader gathers the ``groups`` words of each output pixel
    into :attr:`o` and sends the pixels of the bank's rows in raster order, cropping the last
    column and row when ``out_hw`` is odd.  Output channel ``g·pe + p`` is value ``p`` of
    group ``g``.

    Parameters (keyword-only)
    -------------------------
    out_elem : Shape
        One output value (the requantizer's shape).
    pe : int
        Values per step (the engine's PEs).
    groups : int
        Steps per tile value: ``O = groups · pe`` channels per pixel.
    tiles : (TH, TW)
        Tiles per image.
    out_hw : (OH, OW)
        Output size: ``2·TH - 1 <= OH <= 2·TH``, likewise ``OW``.

    Members
    -------
    y : ``In(unsigned(pe · out_elem.width))``
        The ``pe`` values of one step, value ``p`` at bits ``p·width``.
    y_valid : ``In(1)``
        :attr:`y` is presented; it is taken in a cycle with :attr:`y_ready`.
    y_group : ``In(range(groups))``
        The group of :attr:`y`.
    y_ready : ``Out(1)``
        A bank has room: low while both banks are full (the writer waits for the reader).
    o : ``Out(stream.Signature(ArrayLayout(out_elem, groups · pe)))``

    Timing
    ------
    Throughput: a step per cycle in; a pixel per ``groups + 2`` cycles out (``groups`` reads,
    one cycle for the last word, one for the handshake).  Latency: the reader starts the cycle
    after the last step of a tile row is written.  Backpressure: :attr:`o` may stall at any
    time; the writer then fills the second bank and, with both full, holds :attr:`y_ready` low.
    """

    def __init__(self, *, out_elem, pe: int, groups: int, tiles: tuple[int, int],
                 out_hw: tuple[int, int]):
        with constructing(self):
            self.out_elem = Shape.cast(out_elem)
            self.pe = _count("pe", pe)
            self.groups = _count("groups", groups)
            th, tw = (_count("tiles", int(v)) for v in tiles)
            oh, ow = (_count("out_hw", int(v)) for v in out_hw)
            if not (2 * th - 1 <= oh <= 2 * th and 2 * tw - 1 <= ow <= 2 * tw):
                raise ValueError(f"out_hw={tuple(out_hw)} is not covered by tiles={tuple(tiles)} "
                                 f"of 2×2 (each size 2·tiles - 1 or 2·tiles)")
            self.tiles, self.out_hw = (th, tw), (oh, ow)
        super().__init__({
            "y": In(unsigned(self.pe * self.out_elem.width)),
            "y_valid": In(1),
            "y_group": In(range(self.groups)),
            "y_ready": Out(1),
            "o": Out(stream.Signature(data.ArrayLayout(self.out_elem, self.groups * self.pe))),
        })

    def elaborate(self, platform):
        m = Module()
        G, pe, ob = self.groups, self.pe, self.out_elem.width
        TH, TW = self.tiles
        OH, OW = self.out_hw
        xb, gb = max(1, _bits(2 * TW)), _bits(G)
        # Address Cat(group, column, row in the tile row, bank).
        m.submodules.obuf = mem = Memory(shape=unsigned(pe * ob), depth=4 << (xb + gb), init=[],
                                         attrs={"no_rw_check": 1})
        wp, rp = mem.write_port(), mem.read_port()
        banks_full = Signal(range(3))
        # Writer: the bank, the tile value k = 2a + b, the tile column.
        write_bank, write_k, write_tx = Signal(), Signal(2), Signal(range(TW))
        write = Signal()
        m.d.comb += [self.y_ready.eq(banks_full != 2), write.eq(self.y_valid & self.y_ready)]
        write_x = Signal(xb)  # the column 2·tx + b, in a field of xb bits (as the reader's)
        m.d.comb += write_x.eq(Cat(write_k[0], write_tx))
        row_addr = [write_x, write_k[1], write_bank]
        m.d.comb += [wp.addr.eq(Cat(self.y_group, *row_addr) if gb else Cat(*row_addr)),
                     wp.data.eq(self.y), wp.en.eq(write)]
        bank_written = Signal()
        with m.If(write):
            m.d.sync += write_k.eq(write_k + 1)
            with m.If((write_k == 3) & (self.y_group == G - 1)):
                m.d.sync += write_tx.eq(write_tx + 1)
                with m.If(write_tx == TW - 1):
                    m.d.sync += [write_tx.eq(0), write_bank.eq(~write_bank)]
                    m.d.comb += bank_written.eq(1)

        # Reader: per output pixel, G words (one per group) into the output register.
        read_bank, read_row = Signal(), Signal()
        read_x, read_tile_y = Signal(range(OW)), Signal(range(TH))
        read_group = Signal(range(G))   # the group whose word is addressed
        data_group = Signal(range(G))   # the group of the word on the read port's data
        data_valid = Signal()           # the read port's data is a word of the pixel
        gathered = Signal()             # all G words read: wait for the handshake
        pixel = Signal(data.ArrayLayout(self.out_elem, G * pe))
        pixel_valid = Signal()
        m.d.comb += [self.o.valid.eq(pixel_valid), self.o.payload.eq(pixel)]
        read_x_field = Signal(xb)
        m.d.comb += read_x_field.eq(read_x)
        raddr = [read_x_field, read_row, read_bank]
        m.d.comb += [rp.addr.eq(Cat(read_group, *raddr) if gb else Cat(*raddr)),
                     rp.en.eq(~gathered & (banks_full != 0))]
        m.d.sync += data_valid.eq(rp.en)
        with m.If(rp.en):
            m.d.sync += [data_group.eq(read_group), read_group.eq(read_group + 1)]
            with m.If(read_group == G - 1):
                m.d.sync += [read_group.eq(0), gathered.eq(1)]
        with m.If(data_valid):
            bits = pixel.as_value()
            if G == 1:
                m.d.sync += bits.eq(rp.data)
            else:
                with m.Switch(data_group):
                    for gg in range(G):
                        with m.Case(gg):
                            m.d.sync += bits[gg * pe * ob:(gg + 1) * pe * ob].eq(rp.data)
            with m.If(data_group == G - 1):
                m.d.sync += pixel_valid.eq(1)
        bank_read = Signal()
        with m.If(pixel_valid & self.o.ready):
            m.d.sync += [pixel_valid.eq(0), gathered.eq(0), read_x.eq(read_x + 1)]
            with m.If(read_x == OW - 1):
                m.d.sync += [read_x.eq(0), read_row.eq(~read_row)]
                last_row = ((read_row == 1) | (read_tile_y == TH - 1) if OH % 2
                            else read_row == 1)
                with m.If(last_row):
                    m.d.sync += [read_row.eq(0), read_bank.eq(~read_bank),
                                 read_tile_y.eq(Mux(read_tile_y == TH - 1, 0, read_tile_y + 1))]
                    m.d.comb += bank_read.eq(1)
        m.d.sync += banks_full.eq(banks_full + bank_written - bank_read)
        return m
