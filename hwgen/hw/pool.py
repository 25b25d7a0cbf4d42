"""Streaming pools: max pooling (:class:`MaxPoolEngine`, windows of stride ``size``), pools over
the window generator (:class:`WindowPoolEngine`: any stride and padding, a max or a sum) and the
global sum (:class:`GlobalSumPoolEngine`); ``POOL_ENGINES`` is the engine of each pool spec."""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Shape, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from . import constructing, divisors, elem_shape, ice40_blocks
from .spec import GlobalPoolSpec, PoolSpec, WindowPoolSpec
from .window import WindowGenerator, valid_simd

__all__ = ["MaxPoolEngine", "WindowPoolEngine", "GlobalSumPoolEngine", "POOL_ENGINES", "POOL_OPS",
           "elementwise_max", "row_buffer_attrs", "ROW_BLOCK_BITS"]

#: Smallest row buffer of a folded pool (``lanes < C``) put in block RAM. A memory in logic
#: costs about a flip-flop (an iCE40 logic cell) per bit plus its read multiplexer and write
#: decoding, ~1.3 cells a bit; one 4-kbit block is 1/30 of an UP5K's, as many as ~176 of its
#: 5280 cells: from ~128 bits on, a block is the cheaper place.
ROW_BLOCK_BITS = 128


def elementwise_max(m: Module, a, b, layout: data.ArrayLayout, name: str):
    """A combinational view holding ``max(a[c], b[c])`` for every channel ``c``."""
    out = Signal(layout, name=name)
    for c in range(layout.length):
        m.d.comb += out[c].eq(Mux(b[c] > a[c], b[c], a[c]))
    return out


def row_buffer_attrs(width: int, depth: int) -> dict:
    """Where the row buffer of a folded pool goes: block RAM when it holds at least
    :data:`ROW_BLOCK_BITS` bits and fills its blocks to at least that many bits each (narrow and
    deep: one block up to 8 kbit-words of 8 bits), else flip-flops (Yosys's ``logic``), which a
    tiny memory costs fewer of than a whole block is worth."""
    bits = width * depth
    if bits >= ROW_BLOCK_BITS and bits >= ROW_BLOCK_BITS * ice40_blocks(width, depth):
        return {"ram_style": "block"}
    return {"ram_style": "logic"}


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
    lanes : int, optional
        Channels compared per cycle (divides ``C``; default ``C``, a pixel per cycle). With
        ``lanes < C`` a pixel takes ``slices = C / lanes`` cycles, one ``lanes``-channel slice
        each (the channel fold).

    Members
    -------
    i : ``In(stream.Signature(data.ArrayLayout(elem_shape, channels)))``
        Input pixels, raster order, images back to back.
    o : ``Out(stream.Signature(data.ArrayLayout(elem_shape, channels)))``
        Pooled pixels, raster order, all ``C`` channels per beat whatever ``lanes``.

    Timing
    ------
    ``lanes = C``: accepts one pixel per cycle while ``o`` is not stalled
    (``i.ready = ~o.valid | o.ready``), so ``H*W`` cycles per image. Storage: a ``C``-wide
    register of the running maximum of the current block's row segment, the output register,
    and a row buffer of ``W // size`` pixels of ``C`` partial maxima of the block rows above: a
    memory with a synchronous read port (block RAM on FPGAs: on iCE40, ``ceil(C * bits / 16)``
    SB_RAM40_4K), a register when ``W // size == 1``.

    ``lanes < C``: a pixel's slices are taken one per cycle, ``i.ready`` rising with the last
    (the source holds the payload meanwhile, as the stream rules ask), so ``H*W*C/lanes``
    cycles per image when fed without gaps. One memory of ``(W // size) * C / lanes`` words of
    ``lanes`` values holds the running maximum of every block of the current block row, read
    a slice ahead and written back as each slice passes: no other register of partial maxima.
    It goes to block RAM or logic by size (:func:`row_buffer_attrs`). The output register is
    filled slice by slice during the block's last pixel; a pixel that completes no block
    proceeds even while ``o`` is stalled.

    Size 1 is the identity, a register stage taking one pixel per cycle whatever ``lanes``.
    A pooled pixel is valid one cycle after the last pixel of its block is accepted (latency 1).
    """

    def __init__(self, channels: int, in_hw: tuple[int, int], size: int, elem_shape, lanes: int | None = None):
        with constructing(self):
            self._validate(channels, in_hw, size)
            lanes = channels if lanes is None else lanes
            if not isinstance(lanes, int) or isinstance(lanes, bool) or lanes < 1 or channels % lanes:
                raise ValueError(f"lanes={lanes!r} must divide the {channels} channels; pick one of "
                                 f"{self.valid_lanes(channels)}")
        self.channels = channels
        self.in_hw = (int(in_hw[0]), int(in_hw[1]))
        self.size = size
        self.lanes = lanes
        self.slices = channels // lanes
        self.elem_shape = Shape.cast(elem_shape)
        self.layout = data.ArrayLayout(elem_shape, channels)
        super().__init__({
            "i": In(stream.Signature(self.layout)),
            "o": Out(stream.Signature(self.layout)),
        })

    @classmethod
    def from_spec(cls, spec) -> "MaxPoolEngine":
        """The engine of a :class:`~hwgen.hw.spec.PoolSpec`, with its ``lanes``."""
        return cls(spec.in_shape[0], spec.in_shape[1:], spec.size, elem_shape(*spec.in_range),
                   lanes=spec.folding.lanes)

    @classmethod
    def lane_options(cls, spec) -> list[int]:
        """The ``lanes`` the engine of ``spec`` takes, cheapest first."""
        return cls.valid_lanes(spec.in_shape[0])

    @classmethod
    def spec_cycles(cls, spec, lanes: int) -> int:
        """Cycles per image of the engine of ``spec`` with ``lanes``, without building it."""
        return cls.cycles(spec.in_shape[1:], spec.size, spec.in_shape[0], lanes)

    @staticmethod
    def valid_lanes(channels: int) -> list[int]:
        """Values of ``lanes`` a ``channels``-channel pool takes: the divisors of ``C``."""
        return divisors(channels)

    @staticmethod
    def cycles(in_hw: tuple[int, int], size: int, channels: int, lanes: int) -> int:
        """``cycles_per_image`` of an engine of these parameters, without building it."""
        h, w = in_hw
        return h * w * (channels // lanes if size > 1 else 1)

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
        return self.cycles(self.in_hw, self.size, self.channels, self.lanes)

    latency = 1

    @property
    def _folded(self) -> bool:
        return self.slices > 1 and self.size > 1

    @property
    def row_buffer(self) -> tuple[int, int, str] | None:
        """``(width, depth, style)`` of the row buffer memory, ``None`` for a register / none."""
        ow = self.out_hw[1]
        if self.size == 1:
            return None
        if self._folded:
            width, depth = self.lanes * self.elem_shape.width, ow * self.slices
            return width, depth, row_buffer_attrs(width, depth)["ram_style"]
        return (self.channels * self.elem_shape.width, ow, "block") if ow > 1 else None

    @property
    def params(self) -> dict:
        rb = self.row_buffer
        return {"channels": self.channels, "size": self.size, "lanes": self.lanes,
                "elem_bits": self.elem_shape.width, "elem_signed": self.elem_shape.signed,
                "row_buffer_pixels": self.out_hw[1],
                "row_buffer": None if rb is None else {"width": rb[0], "depth": rb[1], "style": rb[2]}}

    def elaborate(self, platform):
        m = Module()
        if self.size == 1:  # the identity, as a register stage
            with m.If(self.o.valid & self.o.ready):
                m.d.sync += self.o.valid.eq(0)
            m.d.comb += self.i.ready.eq(~self.o.valid | self.o.ready)
            with m.If(self.i.valid & self.i.ready):
                m.d.sync += [self.o.payload.eq(self.i.payload), self.o.valid.eq(1)]
            return m
        if self._folded:
            self._elaborate_folded(m)
        else:
            self._elaborate_parallel(m)
        return m

    def _positions(self, m: Module, advance):
        """Pixel position counters, stepped by ``advance`` (a pixel taken). Returns the
        conditions ``(dx_first, dx_last, dy_first, dy_last, x_last, in_block)`` and ``bx``,
        the block column (reaching ``ow`` in the dropped columns of floor mode)."""
        (h, w), k = self.in_hw, self.size
        oh, ow = self.out_hw
        x = Signal(range(w))
        y = Signal(range(h))
        dx = Signal(range(k))
        dy = Signal(range(k))
        bx = Signal(range(ow + 1))
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
        with m.If(advance):
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
        return dx_first, dx_last, dy_first, dy_last, x_last, in_block, bx

    def _elaborate_parallel(self, m: Module):
        """``lanes = C``: all channels of a pixel per cycle."""
        ow = self.out_hw[1]
        fire = Signal()
        m.d.comb += [
            self.i.ready.eq(~self.o.valid | self.o.ready),
            fire.eq(self.i.valid & self.i.ready),
        ]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        dx_first, dx_last, dy_first, dy_last, _, in_block, bx = self._positions(m, fire)

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

    def _elaborate_folded(self, m: Module):
        """``lanes < C``: one ``lanes``-channel slice of a pixel per cycle.

        Word ``a = bx * slices + s`` of the memory holds slice ``s`` of the running maximum of
        block column ``bx`` of the current block row (all its pixels taken so far). Each slice
        reads its word and writes back ``max(word, input)`` (the input alone for the block's
        first pixel); the block's last pixel writes nothing back and shifts the maxima into
        the output register instead. The read port is synchronous, so it reads the word of the
        slice to come (``a_next``) as the current one is taken: ``a_next`` is never ``a``
        (``slices >= 2``), and was written at least a cycle before, so no read-during-write
        logic is needed.
        """
        ow = self.out_hw[1]
        sl, lb = self.slices, self.lanes * self.elem_shape.width
        slayout = data.ArrayLayout(self.elem_shape, self.lanes)

        s = Signal(range(sl))
        s_last = s == Const(sl - 1, s.shape())
        final = Signal()  # the slice goes to the output register
        go = Signal()     # a slice is taken
        fire = Signal()   # ... and it is the pixel's last
        o_free = ~self.o.valid | self.o.ready
        m.d.comb += [
            go.eq(self.i.valid & (o_free | ~final)),
            fire.eq(go & s_last),
            self.i.ready.eq(s_last & (o_free | ~final)),
        ]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        dx_first, dx_last, dy_first, dy_last, x_last, in_block, _ = self._positions(m, fire)
        m.d.comb += final.eq(in_block & dx_last & dy_last)

        with m.If(go):
            m.d.sync += s.eq(Mux(s_last, 0, s + 1))

        depth = ow * sl
        a = Signal(range(depth + sl))  # reaches depth + sl - 1 in the dropped columns
        a_next = Signal.like(a)
        with m.If(~s_last | (dx_last & ~x_last)):
            m.d.comb += a_next.eq(a + 1)            # next slice, or the next block's first
        with m.Elif(~x_last):
            m.d.comb += a_next.eq(a - (sl - 1))     # the block's next pixel
        # else: the next row starts at word 0
        with m.If(go):
            m.d.sync += a.eq(a_next)

        rows = Memory(shape=slayout, depth=depth, init=[],
                      attrs={**row_buffer_attrs(lb, depth), "no_rw_check": 1})
        m.submodules.rows = rows
        rd, wr = rows.read_port(), rows.write_port()
        xin = Signal(slayout)
        m.d.comb += xin.eq(self.i.payload.as_value().word_select(s, lb))
        cur = Signal(slayout)
        with m.If(dx_first & dy_first):
            m.d.comb += cur.eq(xin)
        with m.Else():
            m.d.comb += cur.eq(elementwise_max(m, rd.data, xin, slayout, "smax"))
        aw = len(rd.addr)
        m.d.comb += [
            rd.addr.eq(a_next[:aw]), rd.en.eq(go),
            wr.addr.eq(a[:aw]), wr.data.eq(cur), wr.en.eq(go & in_block & ~final),
        ]
        with m.If(go & final):
            # Shift register: after the last slice, slice 0 sits in the low bits.
            out = self.o.payload.as_value()
            m.d.sync += out.eq(Cat(out[lb:], cur.as_value()))
            with m.If(s_last):
                m.d.sync += self.o.valid.eq(1)


#: Most line-buffer read ports (block-RAM copies on iCE40) a window pool's default folding uses.
POOL_MAX_PORTS = 3
#: Reductions of :class:`WindowPoolEngine`.
POOL_OPS = ("max", "sum")


class WindowPoolEngine(wiring.Component):
    """Max or sum pooling of any window, stride and padding, streaming, on line buffers.

    ``y[c, oy, ox] = op over (dy, dx) of x[c, oy*stride + dy - pad, ox*stride + dx - pad]``, floor
    mode, ``op`` the maximum (a padded tap never wins: it reads the smallest value of
    ``elem_shape``) or the sum (a padded tap is 0: average pooling with ``count_include_pad``,
    whose ``1/size²`` the quantizer folds into the next requantizer, so no divider).  The pools a
    :class:`MaxPoolEngine` cannot do: overlapping (``stride < size``) or padded windows.

    Structure: a :class:`~hwgen.hw.window.WindowGenerator` (``groups = 1``) issues ``simd``
    taps per beat, :func:`~hwgen.hw.window.tap_order` (channel fastest); ``simd >= C`` beats
    carry ``simd / C`` whole pixels (one read port each), reduced per channel; ``simd < C``
    beats carry a ``simd``-channel slice.  One register per channel holds the running result,
    the output register the finished pixel.

    Parameters
    ----------
    channels : int
    in_hw : (int, int)
        Input ``(H, W)``.
    size, stride, padding : int
        Square window, its step, the padding on every side.
    elem_shape : ShapeLike
        Shape of one input value.
    out_shape : ShapeLike
        Shape of one output value: ``elem_shape`` for ``max``; wide enough for every partial
        sum for ``sum`` (the derived range of :class:`hwgen.ir.SumPool2d` is).
    op : ``"max"`` or ``"sum"``
    simd : int, optional
        Taps per beat, one of :meth:`valid_simd` (default ``C``: a pixel per beat).

    Members
    -------
    i : ``In(stream.Signature(data.ArrayLayout(elem_shape, channels)))``
    o : ``Out(stream.Signature(data.ArrayLayout(out_shape, channels)))``
        Pixels in raster order, images back to back.

    Timing
    ------
    ``cycles_per_image = max(OH*OW*steps, H*W*slices)`` (``steps = C*size²/simd`` beats per
    output pixel, ``slices = max(1, C/simd)`` cycles per input pixel) when neither stream
    stalls.  Latency: a result is valid 2 cycles after its last beat issues.  A finished pixel
    waiting for ``o.ready`` stalls the window (the line buffers still take input rows).
    """

    def __init__(self, channels: int, in_hw: tuple[int, int], size: int, stride: int, padding: int,
                 elem_shape, out_shape, op: str, *, simd: int | None = None):
        with constructing(self):
            MaxPoolEngine._validate(channels, in_hw, 1)
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise TypeError(f"size must be a positive integer, not {size!r}")
            if op not in POOL_OPS:
                raise ValueError(f"op must be one of {', '.join(POOL_OPS)}, not {op!r}")
            for name, v, least in (("stride", stride, 1), ("padding", padding, 0)):
                if isinstance(v, bool) or not isinstance(v, int) or v < least:
                    raise TypeError(f"{name} must be an integer >= {least}, not {v!r}")
            simd = channels if simd is None else simd
            options = self.valid_simd(channels, size)
            if isinstance(simd, bool) or simd not in options:
                raise ValueError(f"lanes={simd!r} does not fold a {channels}-channel {size}×{size} "
                                 f"pool window; pick one of {options}")
            self.elem_shape, self.out_elem = Shape.cast(elem_shape), Shape.cast(out_shape)
            if op == "max" and self.out_elem != self.elem_shape:
                raise ValueError(f"a max pool's out_shape is its elem_shape, not {out_shape!r}")
            self.channels, self.in_hw = channels, (int(in_hw[0]), int(in_hw[1]))
            self.size, self.stride, self.padding = size, stride, padding
            self.op, self.simd = op, simd
            fill = 0
            if op == "max" and self.elem_shape.signed:
                fill = -(1 << (self.elem_shape.width - 1))
            self._fill = fill
            self.steps = channels * size * size // simd
            self.ports = max(1, simd // channels)
            self.slices = max(1, channels // simd)
            h, w = self.in_hw
            if h + 2 * padding < size or w + 2 * padding < size:
                raise ValueError(f"pool size {size} is larger than the padded input {h}×{w}")
            self.out_hw = ((h + 2 * padding - size) // stride + 1,
                           (w + 2 * padding - size) // stride + 1)
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(self.elem_shape, channels))),
            "o": Out(stream.Signature(data.ArrayLayout(self.out_elem, channels))),
        })

    @classmethod
    def from_spec(cls, spec) -> "WindowPoolEngine":
        """The engine of a :class:`~hwgen.hw.spec.WindowPoolSpec`, its ``lanes`` the taps of a
        beat."""
        return cls(spec.in_shape[0], spec.in_shape[1:], spec.size, spec.stride, spec.padding,
                   elem_shape(*spec.in_range), elem_shape(*spec.out_range), spec.op,
                   simd=spec.folding.lanes)

    @classmethod
    def lane_options(cls, spec) -> list[int]:
        """The ``lanes`` the engine of ``spec`` takes, cheapest first."""
        return cls.valid_simd(spec.in_shape[0], spec.size)

    @classmethod
    def spec_cycles(cls, spec, lanes: int) -> int:
        """Cycles per image of the engine of ``spec`` with ``lanes``, without building it."""
        return cls.cycles(spec.in_shape[1:], spec.size, spec.stride, spec.padding,
                          spec.in_shape[0], lanes)

    @staticmethod
    def valid_simd(channels: int, size: int) -> list[int]:
        """Taps per beat: those of the window generator with at most :data:`POOL_MAX_PORTS`
        read ports."""
        return [d for d in valid_simd(channels, size * size) if d // channels <= POOL_MAX_PORTS]

    @staticmethod
    def cycles(in_hw, size, stride, padding, channels, simd) -> int:
        """``cycles_per_image`` of an engine of these parameters, without building it."""
        h, w = in_hw
        oh, ow = (h + 2 * padding - size) // stride + 1, (w + 2 * padding - size) // stride + 1
        return max(oh * ow * channels * size * size // simd, h * w * max(1, channels // simd))

    @property
    def cycles_per_image(self) -> int:
        return self.cycles(self.in_hw, self.size, self.stride, self.padding, self.channels,
                           self.simd)

    latency = 2

    @property
    def params(self) -> dict:
        return {"channels": self.channels, "op": self.op, "size": self.size, "stride": self.stride,
                "padding": self.padding, "lanes": self.simd, "steps": self.steps,
                "elem_bits": self.elem_shape.width, "out_bits": self.out_elem.width}

    def _combine(self, a, b):
        if self.op == "max":
            return Mux(b > a, b, a)
        return a + b

    def elaborate(self, platform):
        m = Module()
        C, simd, sl = self.channels, self.simd, self.slices
        h, w = self.in_hw
        m.submodules.window = win = WindowGenerator(
            C, h, w, (self.size, self.size), self.padding, self.elem_shape, simd, 1,
            stride=self.stride, fill=self._fill)
        wiring.connect(m, wiring.flipped(self.i), win.i)

        # ---- flow: a finished pixel waiting in the output register stalls the window
        stall = Signal()
        take = Signal()  # a beat is consumed
        m.d.comb += [
            stall.eq(win.valid & win.last & self.o.valid & ~self.o.ready),
            win.en.eq(~stall),
            take.eq(win.valid & ~stall),
        ]
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        # ---- the beat's values per channel it carries: its ports reduced
        n = min(simd, C)  # channels per beat
        beat = []
        for j in range(n):
            v = Signal(self.out_elem, name=f"beat{j}")
            terms = [win.taps[p * C + j] for p in range(self.ports)]
            acc = terms[0]
            for t in terms[1:]:
                acc = self._combine(acc, t)
            m.d.comb += v.eq(acc)
            beat.append(v)

        # ---- which slice, and whether it is the window's first pixel (the running value restarts)
        if sl > 1:
            slice_ = Signal(range(sl))
            fresh = Signal(init=1)
            with m.If(take):
                m.d.sync += slice_.eq(Mux(slice_ == sl - 1, 0, slice_ + 1))
                with m.If(slice_ == sl - 1):
                    m.d.sync += fresh.eq(win.last)
        else:
            slice_, fresh = 0, win.first

        # ---- running values and the output register
        run = [Signal(self.out_elem, name=f"run{c}") for c in range(C)]
        for c in range(C):
            j, s = c % n, c // n
            here = (slice_ == s) if sl > 1 else 1
            new = Mux(fresh, beat[j], self._combine(run[c], beat[j]))
            with m.If(take & here):
                m.d.sync += run[c].eq(new)
            with m.If(take & win.last):
                m.d.sync += self.o.payload[c].eq(Mux(here, new, run[c]) if sl > 1 else new)
        with m.If(take & win.last):
            m.d.sync += self.o.valid.eq(1)
        return m


class GlobalSumPoolEngine(wiring.Component):
    """Sum of every channel over the whole ``H×W`` map, streaming: global average pooling
    without its divider (the quantizer puts ``1 / (H*W)`` into the next layer's input scale).

    Parameters
    ----------
    channels : int
    in_hw : (int, int)
    elem_shape, out_shape : ShapeLike
        Shapes of an input value and of a sum (wide enough for every partial sum, as the
        derived range of :class:`hwgen.ir.GlobalSumPool2d` is).

    Members
    -------
    i : ``In(stream.Signature(data.ArrayLayout(elem_shape, channels)))``
    o : ``Out(stream.Signature(data.ArrayLayout(out_shape, channels)))``
        One beat per image, all ``C`` sums.

    Timing
    ------
    One pixel per cycle (``H*W`` cycles per image); the sums are valid the cycle after the
    image's last pixel is taken (latency 1).  The last pixel of the next image waits while
    the previous sums are still in the output register; the others are accumulated meanwhile.
    Storage: ``C`` accumulators and the output register, no memory.
    """

    latency = 1

    def __init__(self, channels: int, in_hw: tuple[int, int], elem_shape, out_shape):
        with constructing(self):
            MaxPoolEngine._validate(channels, in_hw, 1)
        self.channels, self.in_hw = channels, (int(in_hw[0]), int(in_hw[1]))
        self.elem_shape, self.out_elem = Shape.cast(elem_shape), Shape.cast(out_shape)
        self.lanes = channels
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(self.elem_shape, channels))),
            "o": Out(stream.Signature(data.ArrayLayout(self.out_elem, channels))),
        })

    @classmethod
    def from_spec(cls, spec) -> "GlobalSumPoolEngine":
        """The engine of a :class:`~hwgen.hw.spec.GlobalPoolSpec`."""
        return cls(spec.in_shape[0], spec.in_shape[1:], elem_shape(*spec.in_range),
                   elem_shape(*spec.out_range))

    @classmethod
    def lane_options(cls, spec) -> list[int]:
        """All channels at once: the only ``lanes``."""
        return [spec.in_shape[0]]

    @classmethod
    def spec_cycles(cls, spec, lanes: int) -> int:
        """A pixel per cycle."""
        return spec.in_shape[1] * spec.in_shape[2]

    @property
    def cycles_per_image(self) -> int:
        return self.in_hw[0] * self.in_hw[1]

    @property
    def params(self) -> dict:
        return {"channels": self.channels, "op": "sum", "global": True, "lanes": self.lanes,
                "elem_bits": self.elem_shape.width, "out_bits": self.out_elem.width}

    def elaborate(self, platform):
        m = Module()
        n = self.in_hw[0] * self.in_hw[1]
        count = Signal(range(n))
        last = count == n - 1
        take = Signal()
        m.d.comb += [
            self.i.ready.eq(~(last & self.o.valid & ~self.o.ready)),
            take.eq(self.i.valid & self.i.ready),
        ]
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(take):
            m.d.sync += count.eq(Mux(last, 0, count + 1))
            with m.If(last):
                m.d.sync += self.o.valid.eq(1)
        for c in range(self.channels):
            acc = Signal(self.out_elem, name=f"acc{c}")
            total = Mux(count == 0, 0, acc) + self.i.payload[c]
            with m.If(take):
                m.d.sync += acc.eq(total)
                with m.If(last):
                    m.d.sync += self.o.payload[c].eq(total)
        return m


# --------------------------------------------------------------------------- from the IR

#: The engine of each type of pool spec.
POOL_ENGINES = {PoolSpec: MaxPoolEngine, WindowPoolSpec: WindowPoolEngine,
                GlobalPoolSpec: GlobalSumPoolEngine}
