"""Streaming max pooling."""

from __future__ import annotations

from amaranth import Const, Module, Mux, Shape, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from . import constructing

__all__ = ["MaxPoolEngine", "elementwise_max"]


def elementwise_max(m: Module, a, b, layout: data.ArrayLayout, name: str):
    """A combinational view holding ``max(a[c], b[c])`` for every channel ``c``."""
    out = Signal(layout, name=name)
    for c in range(layout.length):
        m.d.comb += out[c].eq(Mux(b[c] > a[c], b[c], a[c]))
    return out


class MaxPoolEngine(wiring.Component):
    """Max pooling over ``size``×``size`` blocks with stride ``size``, floor mode, streaming.

    Parameters
    ----------
    channels : int
        Channels per pixel, ``C``.
    in_hw : (int, int)
        Input height and width ``(H, W)``; the output is ``(H // size, W // size)``. The last
        ``H % size`` rows and ``W % size`` columns are accepted and dropped (floor mode, like
        :func:`hwgen.golden.maxpool`).
    size : int
        Pool window and stride.
    elem_shape : ShapeLike
        Shape of one channel's value (signed or unsigned); input and output share it.

    Members
    -------
    i : ``In(stream.Signature(data.ArrayLayout(elem_shape, channels)))``
        Input pixels, raster order, images back to back.
    o : ``Out(stream.Signature(data.ArrayLayout(elem_shape, channels)))``
        Pooled pixels, raster order.

    Timing
    ------
    Accepts one pixel per cycle while ``o`` is not stalled (``i.ready = ~o.valid | o.ready``),
    so ``H*W`` cycles per image. A pooled pixel is valid one cycle after the last pixel of its
    block is accepted (latency 1). Storage: a ``C``-wide register of the running maximum of
    the current block's row segment, the output register, and a row buffer of ``W // size``
    pixels of ``C`` partial maxima of the block rows above: a memory with a synchronous read
    port (block RAM on FPGAs: on iCE40, ``ceil(C * bits / 16)`` SB_RAM40_4K), a register when
    ``W // size == 1``.
    """

    def __init__(self, channels: int, in_hw: tuple[int, int], size: int, elem_shape):
        with constructing(self):
            self._validate(channels, in_hw, size)
        self.channels = channels
        self.in_hw = (int(in_hw[0]), int(in_hw[1]))
        self.size = size
        self.elem_shape = Shape.cast(elem_shape)
        self.layout = data.ArrayLayout(elem_shape, channels)
        super().__init__({
            "i": In(stream.Signature(self.layout)),
            "o": Out(stream.Signature(self.layout)),
        })

    @staticmethod
    def _validate(channels, in_hw, size):
        if not isinstance(channels, int) or channels < 1:
            raise TypeError(f"channels must be a positive integer, not {channels!r}")
        if (not isinstance(in_hw, (tuple, list)) or len(in_hw) != 2
                or not all(isinstance(v, int) and v >= 1 for v in in_hw)):
            raise TypeError(f"in_hw must be a pair of positive integers (H, W), not {in_hw!r}")
        if not isinstance(size, int) or size < 1:
            raise TypeError(f"size must be a positive integer, not {size!r}")
        if size > min(in_hw):
            raise ValueError(f"pool size {size} is larger than the input {in_hw[0]}×{in_hw[1]}")

    @property
    def out_hw(self) -> tuple[int, int]:
        return self.in_hw[0] // self.size, self.in_hw[1] // self.size

    @property
    def cycles_per_image(self) -> int:
        return self.in_hw[0] * self.in_hw[1]

    latency = 1

    @property
    def params(self) -> dict:
        return {"channels": self.channels, "size": self.size, "elem_bits": self.elem_shape.width,
                "elem_signed": self.elem_shape.signed, "row_buffer_pixels": self.out_hw[1]}

    def elaborate(self, platform):
        m = Module()
        (h, w), k = self.in_hw, self.size
        oh, ow = self.out_hw

        fire = Signal()
        m.d.comb += [
            self.i.ready.eq(~self.o.valid | self.o.ready),
            fire.eq(self.i.valid & self.i.ready),
        ]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        if k == 1:  # the identity, as a register stage
            with m.If(fire):
                m.d.sync += [self.o.payload.eq(self.i.payload), self.o.valid.eq(1)]
            return m

        x = Signal(range(w))
        y = Signal(range(h))
        dx = Signal(range(k))
        dy = Signal(range(k))
        bx = Signal(range(ow + 1))  # reaches ow in the dropped columns of floor mode
        # Comparisons against constants of the counter's own width keep the Verilog width-clean.
        dx_first, dx_last = ~dx.any(), dx == Const(k - 1, dx.shape())
        dy_first, dy_last = ~dy.any(), dy == Const(k - 1, dy.shape())
        x_last, y_last = x == Const(w - 1, x.shape()), y == Const(h - 1, y.shape())
        # Floor mode: the last w % k columns and h % k rows belong to no block.
        in_block = Const(1)
        if ow * k < w:
            in_block &= x < Const(ow * k, x.shape())
        if oh * k < h:
            in_block &= y < Const(oh * k, y.shape())

        # Horizontal: running maximum of the current block's row segment. Kept apart from the
        # output register: sharing one saves its flip-flops but adds a 2:1 mux per bit in front,
        # and on iCE40 a flip-flop fed by a LUT packs into that LUT's logic cell for free.
        hreg = Signal(self.layout)
        hcur = Signal(self.layout)
        with m.If(dx_first):
            m.d.comb += hcur.eq(self.i.payload)
        with m.Else():
            m.d.comb += hcur.eq(elementwise_max(m, hreg, self.i.payload, self.layout, "hmax"))

        # Vertical: combine with the partial maximum of the rows above in this block row.
        vcur = Signal(self.layout)
        row_we = Signal()
        m.d.comb += row_we.eq(fire & in_block & dx_last & ~dy_last)
        if ow > 1:
            # A synchronous read port so the row buffer can be block RAM: ``bx`` settles at
            # least one cycle (the block's first pixel, k >= 2) before its last pixel reads it.
            # Yosys would put a memory this shallow in flip-flops unless told otherwise.
            rows = Memory(shape=self.layout, depth=ow, init=[], attrs={"ram_style": "block"})
            m.submodules.rows = rows
            rd = rows.read_port()
            wr = rows.write_port()
            m.d.comb += [rd.addr.eq(bx), wr.addr.eq(bx), wr.data.eq(vcur), wr.en.eq(row_we),
                         # Never read while writing (the cycle after a write is a block's first
                         # pixel, which needs no row), so Yosys needs no read-during-write logic.
                         rd.en.eq(~row_we)]
            row = rd.data
        else:  # a memory of depth 1 would have a 0-bit address
            row = Signal(self.layout)
            with m.If(row_we):
                m.d.sync += row.eq(vcur)
        with m.If(dy_first):
            m.d.comb += vcur.eq(hcur)
        with m.Else():
            m.d.comb += vcur.eq(elementwise_max(m, row, hcur, self.layout, "vmax"))

        with m.If(fire):
            with m.If(in_block & ~dx_last):
                m.d.sync += hreg.eq(hcur)
            with m.If(in_block & dx_last & dy_last):
                m.d.sync += [self.o.payload.eq(vcur), self.o.valid.eq(1)]
            # Position counters.
            with m.If(x_last):
                m.d.sync += [x.eq(0), dx.eq(0), bx.eq(0)]
                with m.If(y_last):
                    m.d.sync += [y.eq(0), dy.eq(0)]
                with m.Else():
                    m.d.sync += [y.eq(y + 1), dy.eq(Mux(dy_last, 0, dy + 1))]
            with m.Else():
                m.d.sync += x.eq(x + 1)
                with m.If(dx_last):
                    m.d.sync += [dx.eq(0), bx.eq(bx + 1)]
                with m.Else():
                    m.d.sync += dx.eq(dx + 1)
        return m
