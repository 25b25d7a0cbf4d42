"""Sliding-window generator on line buffers: the tap source of the streaming conv engines."""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Shape, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["WindowGenerator", "tap_order", "valid_simd", "add_mod", "slot_base", "inside_image",
           "rows_ready", "count_rows"]


def tap_order(channels: int, kh: int, kw: int) -> list[tuple[int, int, int]]:
    """The order taps of a receptive field are visited in: ``(ky, kx, c)``, channel fastest.

    A sum of ``|x - w|`` does not depend on the order of its terms, so the engine visits the
    field pixel by pixel (one line-buffer word holds all channels of a pixel) and the
    weights are stored in the same order.
    """
    return [(ky, kx, c) for ky in range(kh) for kx in range(kw) for c in range(channels)]


def valid_simd(channels: int, kernel_pixels: int) -> list[int]:
    """Taps per beat that the window supports: divisors of ``C`` (a slice of one pixel) or
    ``C`` times a divisor of ``KH*KW`` (whole pixels, one read port each)."""
    out = {d for d in range(1, channels + 1) if channels % d == 0}
    out |= {channels * d for d in range(1, kernel_pixels + 1) if kernel_pixels % d == 0}
    return sorted(out)


class WindowGenerator(wiring.Component):
    """Line buffers plus the schedule of a folded convolution's taps, any stride ``S``.

    Input pixels are written into a circular buffer of ``R`` rows (one
    :class:`~amaranth.lib.memory.Memory` word per pixel, all channels),
    ``R = max(min(KH + S, H), KH)``: the ``KH`` rows one output row needs plus the ``S`` rows
    the next output row moves down by, being written meanwhile (``H`` rows when the kernel
    spans the image, as a dense layer does).  Output pixel ``(oy, ox)`` reads input pixels
    ``(oy*S + dy - pad, ox*S + dx - pad)``; ``OH = (H + 2*pad - KH) // S + 1`` (likewise
    ``OW``), as :func:`hwgen.golden.im2col`.  Input rows and columns no window reaches (the
    last ``(H + 2*pad - KH) % S``, or those between windows when ``S > KH``) are accepted and
    never read.  The reader walks output pixels in raster order; for each it makes ``groups`` passes (one per group of
    output channels the PEs compute together) of ``steps = C*KH*KW / simd`` beats, each beat
    ``simd`` taps in :func:`tap_order`.  A beat reads whole pixels through
    ``ports = max(1, simd // C)`` read ports (or one pixel and a ``simd``-channel slice of it);
    taps outside the image (zero padding) read as 0.

    When a beat takes a slice of a pixel (``simd < C``) a memory word is one slice: the input
    pixel is written one slice per cycle (``i.ready`` rises with the last), so its payload must
    stay put while ``i.valid`` waits for ``i.ready``, as the stream rules ask.  The reader
    spends at least ``KH*KW*slices`` beats on every output pixel, so this never slows it.

    Flow control: output row ``oy`` starts once the input rows it needs have all arrived (the
    last row of an image also waits for the image's unread last rows, so the next image's rows
    are counted from its first); ``i.ready`` is low while the next input row would overwrite a
    row still needed (also across images: the next image's rows wait for the slots the current
    image frees).

    Parameters
    ----------
    channels, height, width : int
        Input map ``C × H × W``.
    kernel : (int, int)
        ``(KH, KW)``.
    padding : int
        Zero padding on every side.
    stride : int
        Step ``S`` of the window in both directions (keyword; default 1).
    fill : int
        Value of a tap outside the image (keyword; default 0, the zero padding of a
        convolution; a max pool's padding takes the smallest value of ``elem_shape``).
    elem_shape : ShapeLike
        Shape of one input channel value.
    simd : int
        Taps per beat, one of :func:`valid_simd`.
    groups : int
        Passes over the receptive field per output pixel.

    Members
    -------
    i : ``In(stream.Signature(ArrayLayout(elem_shape, C)))``
        Input pixels, raster order, images back to back.
    en : ``In(1)``
        Clock enable of the compute side (the consumer's stall); the input side ignores it.
    w_addr : ``Out(range(groups * steps))``
        Issue stage: ``group * steps + step`` of the beat being issued; the consumer's weight
        ROM reads it with ``en`` so its data lines up with ``taps``.
    taps : ``Out(ArrayLayout(elem_shape, simd))``, valid, first, last : ``Out(1)``,
    group : ``Out(range(groups))``
        The beat, one enabled cycle after issue (the memory read); ``first``/``last`` mark the
        first and last beat of a pass.

    Timing
    ------
    At most one beat per cycle; ``cycles_per_image = OH*OW*groups*steps`` when the input
    keeps up (it takes ``H*W*slices`` cycles at least: with a stride of 2 often more). Latency from issue to ``taps``: 1 enabled cycle. Input: one pixel per
    ``max(1, C // simd)`` cycles while a row is free.
    """

    def __init__(self, channels: int, height: int, width: int, kernel: tuple[int, int], padding: int,
                 elem_shape, simd: int, groups: int, *, stride: int = 1, fill: int = 0):
        for name, v in (("channels", channels), ("height", height), ("width", width), ("simd", simd),
                        ("groups", groups), ("stride", stride)):
            if not isinstance(v, int) or v < 1:
                raise TypeError(f"{name} must be a positive integer, not {v!r}")
        kh, kw = (int(k) for k in kernel)
        if not isinstance(padding, int) or padding < 0:
            raise TypeError(f"padding must be a non-negative integer, not {padding!r}")
        if padding >= kh or padding >= kw:
            raise ValueError(f"padding {padding} must be smaller than the kernel {kh}×{kw}")
        self.C, self.H, self.W, self.KH, self.KW, self.pad = channels, height, width, kh, kw, padding
        self.S = stride
        if height + 2 * padding < kh or width + 2 * padding < kw:
            raise ValueError(f"kernel {kh}×{kw} larger than the padded input {height}×{width}")
        self.OH = (height + 2 * padding - kh) // stride + 1
        self.OW = (width + 2 * padding - kw) // stride + 1
        if simd not in valid_simd(channels, kh * kw):
            raise ValueError(f"simd={simd} does not fold a {channels}-channel {kh}×{kw} window; "
                             f"pick one of {valid_simd(channels, kh * kw)}")
        self.simd, self.groups = simd, groups
        self.elem_shape = Shape.cast(elem_shape)
        lo, hi = _shape_range(self.elem_shape)
        if isinstance(fill, bool) or not isinstance(fill, int) or not lo <= fill <= hi:
            raise ValueError(f"fill must be an integer in [{lo}, {hi}] (the elements' shape), "
                             f"not {fill!r}")
        self.fill = fill
        self.steps = channels * kh * kw // simd
        self.ports = max(1, simd // channels)
        self.slices = max(1, channels // simd)  # simd-wide slices of one pixel
        # KH rows for a window plus the S the next one moves down by, being written; fewer for
        # a short image, but never fewer than KH so a window's rows are distinct slots.
        self.R = max(min(kh + stride, height), kh)
        taps = tap_order(channels, kh, kw)
        # table[s][j] = (dy, dx) of port j at step s, and the channel slice of step s.
        self.table = []
        for s in range(self.steps):
            t0 = s * simd
            row = []
            for j in range(self.ports):
                ky, kx, c = taps[t0 + j * channels]
                row.append((ky, kx))
            self.table.append((row, (t0 % channels) // simd if self.ports == 1 else 0))
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(self.elem_shape, channels))),
            "en": In(1),
            "w_addr": Out(range(groups * self.steps)),
            "taps": Out(data.ArrayLayout(self.elem_shape, simd)),
            "valid": Out(1), "first": Out(1), "last": Out(1),
            "group": Out(range(groups)),
        })

    @property
    def cycles_per_image(self) -> int:
        return self.OH * self.OW * self.groups * self.steps

    def elaborate(self, platform):
        m = Module()
        C, H, W, KH, pad, R, S = self.C, self.H, self.W, self.KH, self.pad, self.R, self.S
        eb = self.elem_shape.width
        en = self.en

        # With slices a word holds one slice of a pixel (``slice + pixel << sb``): a narrow
        # memory fits one block RAM where a whole-pixel word would need one per 16 bits.
        sl, sb = self.slices, max(0, (self.slices - 1).bit_length())
        # The flow control never lets a beat read the row being written: ``no_rw_check`` spares
        # Yosys the soft logic that would emulate a read-during-write to the same address.
        m.submodules.mem = mem = Memory(shape=unsigned(C * eb // sl), depth=(R * W) << sb, init=[],
                                        attrs={"no_rw_check": 1})
        wp = mem.write_port()
        rps = [mem.read_port() for _ in range(self.ports)]

        # ---- reader state (the schedule); ``ox``, ``oy`` count input pixels: output column
        # and row times S (their window's top left corner, less the padding)
        ox = Signal(range((self.OW - 1) * S + 1))
        oy = Signal(range((self.OH - 1) * S + 1))
        grp = Signal(range(self.groups))
        step = Signal(range(self.steps))
        widx = Signal(range(self.groups * self.steps))
        row_slot = Signal(range(R), init=(-pad) % R)  # slot of input row oy - pad
        # ---- writer state
        wr_addr = Signal(range(R * W))
        wr_x = Signal(range(W))
        wr_ahead = Signal(range(H + R + 1))  # full rows written, counted from the reader's image

        # Rows of the reader's image that must be present / may be dropped.
        top = oy + (KH - pad)
        if min(H, (self.OH - 1) * S + KH - pad) < H:
            # The last output row reads no row past ``top``: it waits for the unread ones too,
            # so that ``wr_ahead`` can drop a whole image when the image ends.
            top = Mux(oy == (self.OH - 1) * S, H, top)
        inputs_ready = rows_ready(m, wr_ahead, top, H)
        low = Signal(range(H + 1))
        m.d.comb += low.eq(Mux(oy > pad, oy - pad, 0))
        avail = Signal()
        m.d.comb += avail.eq(inputs_ready)
        issue = Signal()
        m.d.comb += issue.eq(en & avail)

        last_step = step == self.steps - 1
        last_group = grp == self.groups - 1
        last_x = ox == (self.OW - 1) * S
        last_y = oy == (self.OH - 1) * S
        finish = Signal()  # the last beat of an image is issued
        m.d.comb += finish.eq(issue & last_step & last_group & last_x & last_y)

        with m.If(issue):
            m.d.sync += step.eq(step + 1)
            m.d.sync += widx.eq(widx + 1)
            with m.If(last_step):
                m.d.sync += [step.eq(0), grp.eq(grp + 1)]
                with m.If(last_group):
                    m.d.sync += [grp.eq(0), widx.eq(0), ox.eq(ox + S)]
                    with m.If(last_x):
                        m.d.sync += [ox.eq(0), oy.eq(oy + S)]
                        with m.If(last_y):
                            # Next image's row -pad: H - (OH - 1)*S rows further on.
                            next_image = (H - (self.OH - 1) * S) % R
                            m.d.sync += [oy.eq(0), row_slot.eq(add_mod(row_slot, next_image, R))]
                        with m.Else():
                            m.d.sync += row_slot.eq(add_mod(row_slot, S if S <= R else S % R, R))
        m.d.comb += self.w_addr.eq(widx)

        # ---- writer: a pixel's slices one per cycle, the pixel taken with the last
        space = Signal()
        m.d.comb += space.eq(wr_ahead < low + R)
        wr_slice = Signal(range(sl))
        take = Signal()
        row_done = Signal()
        m.d.comb += [
            wp.addr.eq(Cat(wr_slice, wr_addr) if sb else wr_addr),
            wp.data.eq(self.i.payload.as_value().word_select(wr_slice, C * eb // sl) if sl > 1
                       else self.i.payload.as_value()),
            wp.en.eq(self.i.valid & space),
            self.i.ready.eq(space & (wr_slice == sl - 1)),
            take.eq(self.i.valid & self.i.ready),
            row_done.eq(take & (wr_x == W - 1)),
        ]
        if sl > 1:
            with m.If(wp.en):
                m.d.sync += wr_slice.eq(Mux(wr_slice == sl - 1, 0, wr_slice + 1))
        with m.If(take):
            m.d.sync += [wr_x.eq(wr_x + 1), wr_addr.eq(wr_addr + 1)]
            with m.If(wr_x == W - 1):
                m.d.sync += wr_x.eq(0)
            with m.If(wr_addr == R * W - 1):
                m.d.sync += wr_addr.eq(0)
        count_rows(m, wr_ahead, row_done, finish, H)

        # ---- read addresses (issue stage) and the tags of stage 1
        inside = [Signal(name=f"inside{j}") for j in range(self.ports)]
        inside_q = [Signal(name=f"inside{j}_q") for j in range(self.ports)]
        slice_sel = Signal(range(self.slices))
        for j, rp in enumerate(rps):
            dy = Signal(range(self.KH), name=f"dy{j}")
            dx = Signal(range(self.KW), name=f"dx{j}")
            with m.Switch(step):
                for s, (row, sl) in enumerate(self.table):
                    with m.Case(s):
                        m.d.comb += [dy.eq(row[j][0]), dx.eq(row[j][1])]
                        if j == 0 and self.slices > 1:
                            m.d.comb += slice_sel.eq(sl)
            iy = Signal(range(-pad, (self.OH - 1) * S + KH + 1), name=f"iy{j}")
            ix = Signal(range(-pad, (self.OW - 1) * S + self.KW + 1), name=f"ix{j}")
            m.d.comb += [iy.eq(oy + dy - pad), ix.eq(ox + dx - pad)]
            m.d.comb += inside[j].eq(inside_image(iy, ix, H, W))
            slot = Signal(range(R), name=f"slot{j}")
            m.d.comb += slot.eq(add_mod(row_slot, dy, R))
            pixel = slot_base(m, slot, R, W, f"base{j}") + ix.as_unsigned()
            m.d.comb += [rp.addr.eq(Cat(slice_sel, pixel[:len(wr_addr)]) if sb else pixel), rp.en.eq(en)]
            with m.If(en):
                m.d.sync += inside_q[j].eq(inside[j])
        with m.If(en):
            m.d.sync += [
                self.valid.eq(issue),
                self.first.eq(step == 0),
                self.last.eq(last_step),
                self.group.eq(grp),
            ]

        # ---- stage 1: pick the taps from the read words, zero outside the image
        fill = 0
        if self.fill:  # one fill value per element of a word
            elems = len(rps[0].data) // eb
            fill = Cat(*(Const(self.fill, self.elem_shape) for _ in range(elems)))
        words = [Mux(inside_q[j], rp.data, fill) for j, rp in enumerate(rps)]
        if self.ports > 1:
            m.d.comb += self.taps.eq(_cat(words))
        else:
            m.d.comb += self.taps.eq(words[0])
        return m


# ---- line-buffer addressing, shared with the Winograd tile buffer (winograd_buffer.py)

def add_mod(a, b, r: int):
    """``(a + b) mod r`` for ``a`` in ``[0, r)`` and ``b`` in ``[0, r]``, with one compare."""
    s = a + b
    return Mux(s >= r, s - r, s)


def slot_base(m: Module, slot, slots: int, width: int, name: str) -> Signal:
    """``slot * width``, the first address of a line-buffer slot, as a small table of
    ``slots`` constants (no multiplier); a combinational signal named ``name``."""
    base = Signal(range(slots * width), name=name)
    with m.Switch(slot):
        for r in range(slots):
            with m.Case(r):
                m.d.comb += base.eq(r * width)
    return base


def inside_image(iy, ix, height: int, width: int):
    """Whether the tap at row ``iy``, column ``ix`` (signed, padding at negative positions)
    lies inside the ``height × width`` image; taps outside read as zero padding."""
    return (iy >= 0) & (iy < height) & (ix >= 0) & (ix < width)


def rows_ready(m: Module, rows_written, top, height: int):
    """Whether the input rows that the reader's next beat needs have arrived: the rows
    ``< min(top, height)`` of the image, ``top`` being one past the last row of its window.
    ``rows_written`` counts the full rows written, from the reader's image (:func:`count_rows`)."""
    need = Signal(range(height + 1), name="need")
    m.d.comb += need.eq(Mux(top > height, height, top))
    return rows_written >= need


def count_rows(m: Module, rows_written, row_done, finish, height: int):
    """Count the rows written (``row_done``: the last pixel of a row is taken), counted from the
    reader's image: when the reader issues the last beat of an image (``finish``) the count
    drops by the ``height`` rows of that image."""
    m.d.sync += rows_written.eq(rows_written + row_done - Mux(finish, height, 0))


def _shape_range(shape: Shape) -> tuple[int, int]:
    if shape.signed:
        return -(1 << (shape.width - 1)), (1 << (shape.width - 1)) - 1
    return 0, (1 << shape.width) - 1


def _cat(values):
    return Cat(*values)
