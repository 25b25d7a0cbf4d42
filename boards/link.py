"""The board's link core: the accelerator behind a UART that speaks :mod:`hwgen.frame`.

:class:`LinkCore` is the part of a board top-level that does not depend on the board: the UART,
the frame parser, the reply sender and the clock domain crossing to the accelerator. The board
top-level (:mod:`hwgen.boards.top`) adds the pins, the PLL and the resets; the board testbench
(``sim/test_board.py``) drives the core's Verilog directly.
"""

from amaranth import Cat, Const, DomainRenamer, Module, Mux, Signal, signed, unsigned
from amaranth.lib import crc, fifo, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from hwgen import frame
from hwgen.hw import constructing
from hwgen.hw.uart import UARTRx, UARTTx, check_divisor

__all__ = ["LinkCore", "result_bytes"]


def result_bytes(classes: int) -> int:
    """Bytes of one result in a reply: ``classes`` i32 scores, the argmax u8, the cycles u32."""
    return 4 * classes + frame.RESULT_TAIL.size


def _pow2_at_least(n: int) -> int:
    return 1 << ceil_log2(max(n, 2))


class LinkCore(wiring.Component):
    """An accelerator served over a UART with the frame format of :mod:`hwgen.frame`.

    The UART, the parser and the reply sender run in the ``sync`` domain (the line's clock, the
    board's oscillator); the accelerator runs in ``accel_domain``. With ``accel_domain="accel"``
    pixels and reply bytes cross between the two through :class:`amaranth.lib.fifo.AsyncFIFO`
    (the only signals that cross), so the ``accel`` clock may be faster, slower or unrelated;
    with ``accel_domain="sync"`` the same FIFOs are :class:`~amaranth.lib.fifo.SyncFIFO`.

    Request bytes: each image is ``H × W`` pixels in raster order, each pixel ``C`` bytes
    (channel 0 first), one byte per value, so the image length is ``H·W·C`` bytes. The images
    go into the accelerator as they arrive; an image enters the accelerator only once all of its
    pixels are in the crossing FIFO, so the reply's cycle count (accelerator clock cycles from
    the image's first pixel to its result) measures the accelerator, not the link.

    A frame is answered once, after its CRC: with the results (status OK) or with an error
    status and no results. A frame that has a bad version is answered at once; one whose count
    is 0 or more than ``max_count`` or whose image length is wrong is skipped to its declared end
    and answered ``BAD_LENGTH``; one that goes silent for ``timeout`` cycles inside a frame is
    answered ``SHORT``, the image it cut completed with zero pixels (so that the accelerator's
    position counters stay aligned) and its result dropped, like every result of a bad frame.
    Bytes outside a frame are skipped up to the next magic; a lone ``H`` that times out is
    garbage, not a frame, and gets no reply. Bytes that arrive while a reply is being sent are
    dropped: the host sends a frame, then waits for its reply.

    Parameters
    ----------
    accelerator : :class:`hwgen.hw.top.Accelerator`
        The accelerator (``pixels`` in, ``result`` out); input values of at most 8 bits, scores
        of at most 32 bits.
    divisor : int
        ``sync`` clock cycles per UART bit (the clock over the baud rate), at least 4.
    timeout : int
        ``sync`` cycles of silence that end a frame early (``SHORT``); at least 20 bit times.
    max_count : int
        Images per frame the board takes, 1..255: the reply buffer holds this many results.
    accel_domain : str
        ``"accel"`` (a domain of its own) or ``"sync"``.

    Members
    -------
    rx : In(1)
        The UART line from the host (idle high).
    tx : Out(1)
        The UART line to the host (idle high).
    busy : Out(1)
        High from a frame's magic until its reply is sent.
    error : Out(1)
        High from an error reply until the next OK reply.
    """

    rx: In(1, init=1)
    tx: Out(1, init=1)
    busy: Out(1)
    error: Out(1)

    def __init__(self, accelerator, *, divisor: int, timeout: int, max_count: int = 4,
                 accel_domain: str = "accel"):
        with constructing(self):
            self._divisor = check_divisor(divisor)
            if not isinstance(timeout, int) or timeout < 20 * divisor:
                raise ValueError(f"timeout must be an integer of at least 20 bit times "
                                 f"({20 * divisor} cycles), not {timeout!r}")
            if not isinstance(max_count, int) or not 1 <= max_count <= frame.MAX_COUNT:
                raise ValueError(f"max_count must be 1..{frame.MAX_COUNT}, not {max_count!r}")
            if accel_domain not in ("accel", "sync"):
                raise ValueError(f"accel_domain must be 'accel' or 'sync', not {accel_domain!r}")
            model = accelerator.model
            if model.input_bits > 8:
                raise ValueError(f"the link sends one byte per input value; this model's inputs "
                                 f"have {model.input_bits} bits")
            if accelerator.score_shape.width > 32:
                raise ValueError(f"the reply carries 32-bit scores; this model's have "
                                 f"{accelerator.score_shape.width} bits")
            if accelerator.classes > 255:
                raise ValueError("the reply's argmax is one byte: at most 255 classes")
            self._accelerator = accelerator
            self._timeout = timeout
            self._max_count = max_count
            self._accel_domain = accel_domain
            c, h, w = model.input_shape
            self._channels, self._pixels = c, h * w
            self._image_len = c * h * w
            if self._image_len > 0xFFFF:
                raise ValueError(f"an image of {self._image_len} bytes does not fit a frame")
            super().__init__()

    @property
    def accelerator(self):
        return self._accelerator

    @property
    def divisor(self) -> int:
        return self._divisor

    @property
    def timeout(self) -> int:
        return self._timeout

    @property
    def max_count(self) -> int:
        return self._max_count

    @property
    def image_len(self) -> int:
        return self._image_len

    @property
    def result_bytes(self) -> int:
        return result_bytes(self._accelerator.classes)

    def describe(self) -> dict:
        """What a host needs to know about the link (written to the board build's manifest)."""
        return {"divisor": self._divisor, "timeout_cycles": self._timeout,
                "max_count": self._max_count, "image_len": self._image_len,
                "classes": self._accelerator.classes, "result_bytes": self.result_bytes,
                "accel_domain": self._accel_domain, "frame_version": frame.VERSION}

    def _fifo(self, width, depth, w_domain, r_domain):
        if self._accel_domain == "sync":
            return fifo.SyncFIFO(width=width, depth=depth)
        return fifo.AsyncFIFO(width=width, depth=depth, w_domain=w_domain, r_domain=r_domain)

    def elaborate(self, platform):
        m = Module()
        acc = self._accel_domain
        c, pixels = self._channels, self._pixels
        bits = self._accelerator.model.input_bits

        m.submodules.uart_rx = rx = UARTRx(self._divisor)
        m.submodules.uart_tx = tx = UARTTx(self._divisor)
        m.submodules.pixel_fifo = pix_fifo = self._fifo(c * bits, _pow2_at_least(2 * pixels),
                                                       "sync", acc)
        m.submodules.reply_fifo = res_fifo = self._fifo(
            8, _pow2_at_least(self._max_count * self.result_bytes), acc, "sync")
        m.submodules.feeder = feeder = _Feeder(self._accelerator, pixels, acc)
        m.submodules.parser = parser = _Parser(self._channels, pixels, bits, self._image_len,
                                               self._max_count, self._timeout)
        m.submodules.sender = sender = _Sender(self._accelerator.classes, self.result_bytes)

        m.d.comb += [
            rx.rx.eq(self.rx),
            self.tx.eq(tx.tx),
            self.busy.eq(parser.busy),
            self.error.eq(sender.error),
            # line -> parser -> pixel FIFO -> feeder (accelerator domain)
            parser.byte.eq(rx.o.payload),
            parser.byte_valid.eq(rx.o.valid),
            rx.o.ready.eq(parser.byte_ready),
            pix_fifo.w_data.eq(parser.pixel),
            pix_fifo.w_en.eq(parser.pixel_valid),
            parser.pixel_ready.eq(pix_fifo.w_rdy),
            feeder.pixels_level.eq(pix_fifo.r_level),
            feeder.pixel.eq(pix_fifo.r_data),
            feeder.pixel_valid.eq(pix_fifo.r_rdy),
            pix_fifo.r_en.eq(feeder.pixel_ready),
            # accelerator results, as reply bytes -> reply FIFO -> sender -> line
            res_fifo.w_data.eq(feeder.out_byte),
            res_fifo.w_en.eq(feeder.out_valid),
            feeder.out_ready.eq(res_fifo.w_rdy),
            sender.body.eq(res_fifo.r_data),
            sender.body_valid.eq(res_fifo.r_rdy),
            res_fifo.r_en.eq(sender.body_ready),
            # parser <-> sender hand-off
            sender.start.eq(parser.reply),
            sender.status.eq(parser.status),
            sender.count.eq(parser.count),
            sender.fed.eq(parser.fed),
            parser.reply_done.eq(sender.done),
            tx.i.payload.eq(sender.tx_byte),
            tx.i.valid.eq(sender.tx_valid),
            sender.tx_ready.eq(tx.i.ready),
        ]
        return m


class _Parser(wiring.Component):
    """The request side, in ``sync``: bytes in, pixels out, and what to reply.

    Consumes one byte a cycle at most (the UART delivers one every ``10 × divisor`` cycles);
    ``pixel_valid`` is the byte's own cycle, so ``byte_ready`` waits for ``pixel_ready`` when
    the byte completes a pixel. ``reply`` rises when a frame ends (good or bad) and stays high
    until ``reply_done``; ``status``, ``count`` and ``fed`` (images that went into the
    accelerator, to be sent or dropped) hold meanwhile.
    """

    def __init__(self, channels, pixels, bits, image_len, max_count, timeout):
        self._c, self._p, self._bits = channels, pixels, bits
        self._image_len, self._max_count, self._timeout = image_len, max_count, timeout
        super().__init__({
            "byte": In(8), "byte_valid": In(1), "byte_ready": Out(1),
            "pixel": Out(channels * bits), "pixel_valid": Out(1), "pixel_ready": In(1),
            "reply": Out(1), "reply_done": In(1),
            "status": Out(3), "count": Out(8), "fed": Out(8), "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        c, p = self._c, self._p
        m.submodules.crc = check = crc.catalog.CRC16_CCITT_FALSE(data_width=8).create()

        take = Signal()  # a byte is consumed this cycle
        m.d.comb += [take.eq(self.byte_valid & self.byte_ready), check.data.eq(self.byte)]

        # Silence inside a frame: the cycles since the last byte.
        silence = Signal(range(self._timeout + 1))
        timed_out = Signal()
        m.d.comb += timed_out.eq(silence == self._timeout)
        with m.If(take):
            m.d.sync += silence.eq(0)
        with m.Elif(~timed_out):
            m.d.sync += silence.eq(silence + 1)

        length = Signal(16)
        skip = Signal(range(frame.MAX_COUNT * 0xFFFF + frame.CRC.size + 1))
        images = Signal(8)  # images still to come, the current one included
        pix = Signal(range(p))  # pixel of the current image
        chan = Signal(range(c)) if c > 1 else Const(0, 1)
        held = [Signal(8, name=f"held{i}") for i in range(c - 1)]  # bytes of a partial pixel
        crc_lo_ok = Signal()
        m.d.comb += self.pixel.eq(Cat(*(h[:self._bits] for h in held), self.byte[:self._bits]))

        def pixel_done(mm):
            """The pixel just pushed ends an image?"""
            with mm.If(pix == p - 1):
                mm.d.sync += [pix.eq(0), self.fed.eq(self.fed + 1), images.eq(images - 1)]
            with mm.Else():
                mm.d.sync += pix.eq(pix + 1)

        def finish(mm, status, pad=False):
            mm.d.sync += self.status.eq(status)
            mm.next = "PAD" if pad else "REPLY"

        with m.FSM():
            with m.State("HUNT"):
                m.d.comb += self.byte_ready.eq(1)
                with m.If(take & (self.byte == frame.REQUEST_MAGIC[0])):
                    m.d.comb += [check.start.eq(1), check.valid.eq(1)]
                    m.next = "MAGIC"
            with m.State("MAGIC"):
                m.d.comb += self.byte_ready.eq(1)
                with m.If(take):
                    with m.If(self.byte == frame.REQUEST_MAGIC[1]):
                        m.d.comb += check.valid.eq(1)
                        m.next = "VERSION"
                    with m.Elif(self.byte == frame.REQUEST_MAGIC[0]):
                        m.d.comb += [check.start.eq(1), check.valid.eq(1)]
                    with m.Else():
                        m.next = "HUNT"
                with m.Elif(timed_out):
                    m.next = "HUNT"  # a lone "H" is garbage, not a frame
            with m.State("VERSION"):
                m.d.comb += [self.byte_ready.eq(1), self.busy.eq(1), check.valid.eq(take)]
                m.d.sync += [self.fed.eq(0), pix.eq(0)]
                if c > 1:
                    m.d.sync += chan.eq(0)
                with m.If(take):
                    with m.If(self.byte == frame.VERSION):
                        m.next = "COUNT"
                    with m.Else():
                        m.d.sync += self.count.eq(0)
                        finish(m, frame.Status.BAD_VERSION)
                with m.Elif(timed_out):
                    finish(m, frame.Status.SHORT)
            for state, nxt in (("COUNT", "LEN_LO"), ("LEN_LO", "LEN_HI")):
                with m.State(state):
                    m.d.comb += [self.byte_ready.eq(1), self.busy.eq(1), check.valid.eq(take)]
                    with m.If(take):
                        if state == "COUNT":
                            m.d.sync += [self.count.eq(self.byte), images.eq(self.byte)]
                        else:
                            m.d.sync += length[:8].eq(self.byte)
                        m.next = nxt
                    with m.Elif(timed_out):
                        finish(m, frame.Status.SHORT)
            with m.State("LEN_HI"):
                m.d.comb += [self.byte_ready.eq(1), self.busy.eq(1), check.valid.eq(take)]
                with m.If(take):
                    good = ((Cat(length[:8], self.byte) == self._image_len)
                            & (self.count != 0) & (self.count <= self._max_count))
                    with m.If(good):
                        m.next = "IMAGE"
                    with m.Else():
                        m.d.sync += skip.eq(self.count * Cat(length[:8], self.byte)
                                            + frame.CRC.size)
                        m.next = "SKIP"
                with m.Elif(timed_out):
                    finish(m, frame.Status.SHORT)
            with m.State("SKIP"):
                m.d.comb += [self.byte_ready.eq(1), self.busy.eq(1)]
                with m.If(take):
                    m.d.sync += skip.eq(skip - 1)
                with m.If((skip == 0) | timed_out):
                    m.d.sync += self.count.eq(0)
                    finish(m, frame.Status.BAD_LENGTH)
            with m.State("IMAGE"):
                m.d.comb += [self.busy.eq(1), check.valid.eq(take)]
                last_chan = (chan == c - 1) if c > 1 else Const(1)
                m.d.comb += self.byte_ready.eq(self.pixel_ready | ~last_chan)
                with m.If(take):
                    with m.If(last_chan):
                        m.d.comb += self.pixel_valid.eq(1)
                        if c > 1:
                            m.d.sync += chan.eq(0)
                        pixel_done(m)
                        with m.If((pix == p - 1) & (images == 1)):
                            m.next = "CRC_LO"
                    if c > 1:
                        with m.Else():
                            with m.Switch(chan):
                                for i in range(c - 1):
                                    with m.Case(i):
                                        m.d.sync += held[i].eq(self.byte)
                            m.d.sync += chan.eq(chan + 1)
                with m.Elif(timed_out):
                    finish(m, frame.Status.SHORT, pad=True)
            with m.State("CRC_LO"):
                m.d.comb += [self.byte_ready.eq(1), self.busy.eq(1)]
                with m.If(take):
                    m.d.sync += crc_lo_ok.eq(self.byte == check.crc[:8])
                    m.next = "CRC_HI"
                with m.Elif(timed_out):
                    finish(m, frame.Status.SHORT)
            with m.State("CRC_HI"):
                m.d.comb += [self.byte_ready.eq(1), self.busy.eq(1)]
                with m.If(take):
                    with m.If(crc_lo_ok & (self.byte == check.crc[8:])):
                        finish(m, frame.Status.OK)
                    with m.Else():
                        finish(m, frame.Status.BAD_CRC)
                with m.Elif(timed_out):
                    finish(m, frame.Status.SHORT)
            with m.State("PAD"):
                # Complete the image a timeout cut, with zero pixels; its result is dropped.
                m.d.comb += [self.busy.eq(1), self.pixel.eq(0)]
                with m.If((pix == 0) & (chan == 0)):
                    m.next = "REPLY"
                with m.Else():
                    m.d.comb += self.pixel_valid.eq(1)
                    with m.If(self.pixel_ready):
                        if c > 1:
                            m.d.sync += chan.eq(0)
                        pixel_done(m)
            with m.State("REPLY"):
                m.d.comb += [self.byte_ready.eq(1), self.busy.eq(1), self.reply.eq(1)]
                with m.If(self.reply_done):
                    m.next = "HUNT"
        return m


class _Sender(wiring.Component):
    """The reply side, in ``sync``: on ``start``, the reply header, ``count`` results from the
    reply FIFO (``body``) and the CRC onto the UART; an error reply drops the ``fed`` results
    of the frame instead. ``done`` is high for one cycle at the end."""

    def __init__(self, classes, result_bytes):
        self._classes, self._rb = classes, result_bytes
        super().__init__({
            "start": In(1), "status": In(3), "count": In(8), "fed": In(8), "done": Out(1),
            "body": In(8), "body_valid": In(1), "body_ready": Out(1),
            "tx_byte": Out(8), "tx_valid": Out(1), "tx_ready": In(1), "error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.crc = gen = crc.catalog.CRC16_CCITT_FALSE(data_width=8).create()
        ok = Signal()
        m.d.comb += ok.eq(self.status == frame.Status.OK)
        sent = Signal()  # a byte goes to the UART this cycle
        m.d.comb += [sent.eq(self.tx_valid & self.tx_ready), gen.data.eq(self.tx_byte)]

        header = Signal(range(frame.REPLY_HEADER.size))
        left = Signal(range(frame.MAX_COUNT * self._rb + 1))  # body bytes to send or drop
        head_bytes = [frame.REPLY_MAGIC[0], frame.REPLY_MAGIC[1], frame.VERSION, self.status,
                      ok.replicate(8) & self.count, ok.replicate(8) & self._classes]
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.comb += gen.start.eq(1)
                    m.d.sync += [header.eq(0), self.error.eq(~ok),
                                 left.eq(Mux(ok, self.count, self.fed) * self._rb)]
                    m.next = "HEAD"
            with m.State("HEAD"):
                m.d.comb += self.tx_valid.eq(1)
                with m.Switch(header):
                    for i, b in enumerate(head_bytes):
                        with m.Case(i):
                            m.d.comb += self.tx_byte.eq(b)
                m.d.comb += gen.valid.eq(sent)
                with m.If(sent):
                    m.d.sync += header.eq(header + 1)
                    with m.If(header == len(head_bytes) - 1):
                        m.next = "BODY"
            with m.State("BODY"):
                with m.If(left == 0):
                    m.next = "CRC_LO"
                with m.Elif(ok):
                    m.d.comb += [self.tx_byte.eq(self.body), self.tx_valid.eq(self.body_valid),
                                 self.body_ready.eq(self.tx_ready), gen.valid.eq(sent)]
                    with m.If(sent):
                        m.d.sync += left.eq(left - 1)
                with m.Else():
                    m.next = "CRC_LO"
            for state, nxt, part in (("CRC_LO", "CRC_HI", gen.crc[:8]),
                                     ("CRC_HI", "DROP", gen.crc[8:])):
                with m.State(state):
                    m.d.comb += [self.tx_byte.eq(part), self.tx_valid.eq(1)]
                    with m.If(sent):
                        m.next = nxt
            with m.State("DROP"):
                # An error reply's results (of the images the bad frame fed) are dropped.
                m.d.comb += self.body_ready.eq(1)
                with m.If(left == 0):
                    m.d.comb += self.done.eq(1)
                    m.next = "IDLE"
                with m.Elif(self.body_valid):
                    m.d.sync += left.eq(left - 1)
        return m


class _Feeder(wiring.Component):
    """The accelerator side, in ``domain``: whole images from the pixel FIFO into the
    accelerator, its results out as reply bytes (``4·classes`` bytes of i32 scores, the argmax,
    the u32 cycle count, little-endian), one byte a cycle while the reply FIFO has room.

    An image starts only when ``pixels_level`` says all of it is in the FIFO. A free-running
    32-bit counter stamps each image's first pixel (up to 4 images in flight; a fifth waits);
    ``cycles`` is the count from that stamp to the cycle the image's result is first valid.
    """

    def __init__(self, accelerator, pixels, domain):
        self._acc, self._p, self._domain = accelerator, pixels, domain
        width = accelerator.pixels.payload.shape().size
        self._flat = 8 * result_bytes(accelerator.classes)
        super().__init__({
            "pixels_level": In(range(_pow2_at_least(2 * pixels) + 1)),
            "pixel": In(width), "pixel_valid": In(1), "pixel_ready": Out(1),
            "out_byte": Out(8), "out_valid": Out(1), "out_ready": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        d = self._domain
        acc = self._acc
        m.submodules.accelerator = DomainRenamer(d)(acc) if d != "sync" else acc
        m.submodules.stamps = stamps = DomainRenamer(d)(fifo.SyncFIFOBuffered(width=32, depth=4))

        now = Signal(32)
        m.d[d] += now.eq(now + 1)

        # Whole images into the accelerator.
        pix = Signal(range(self._p))
        with m.FSM(domain=d):
            with m.State("WAIT"):
                with m.If((self.pixels_level >= self._p) & stamps.w_rdy):
                    m.d.comb += [stamps.w_en.eq(1), stamps.w_data.eq(now)]
                    m.next = "STREAM"
            with m.State("STREAM"):
                m.d.comb += [acc.pixels.valid.eq(self.pixel_valid),
                             acc.pixels.payload.eq(self.pixel),
                             self.pixel_ready.eq(acc.pixels.ready)]
                with m.If(self.pixel_valid & acc.pixels.ready):
                    m.d[d] += pix.eq(pix + 1)
                    with m.If(pix == self._p - 1):
                        m.d[d] += pix.eq(0)
                        m.next = "WAIT"

        # Results out as bytes; the result beat is read in place (it holds while not ready).
        res = acc.result.payload
        cycles = Signal(32)
        scores = []
        for i in range(acc.classes):
            s = Signal(signed(32) if acc.score_shape.signed else unsigned(32), name=f"score{i}")
            m.d.comb += s.eq(res.scores[i])
            scores.append(s)
        argmax = Signal(8)
        flat = Signal(self._flat)
        m.d.comb += [argmax.eq(res.argmax), flat.eq(Cat(*scores, argmax, cycles))]
        index = Signal(range(self._flat // 8))
        with m.FSM(domain=d):
            with m.State("IDLE"):
                with m.If(acc.result.valid):
                    m.d[d] += [cycles.eq(now - stamps.r_data), index.eq(0)]
                    m.d.comb += stamps.r_en.eq(1)
                    m.next = "BYTES"
            with m.State("BYTES"):
                m.d.comb += [self.out_byte.eq(flat.word_select(index, 8)),
                             self.out_valid.eq(1)]
                with m.If(self.out_ready):
                    m.d[d] += index.eq(index + 1)
                    with m.If(index == self._flat // 8 - 1):
                        m.d.comb += acc.result.ready.eq(1)
                        m.next = "IDLE"
        return m
