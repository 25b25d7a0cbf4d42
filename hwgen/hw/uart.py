"""The board link's UART: 8 data bits, no parity, one stop bit (8N1), LSB first (issue 16).

The project's own, small, tested against the Python line model in ``tests/test_hw_uart.py``.
Both ends run in the clock domain of the line's side (``sync`` of the component); the
accelerator's faster domain talks to them through a FIFO crossing, not through these ports.
"""

from amaranth import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from . import constructing

__all__ = ["UARTTx", "UARTRx", "check_divisor"]


def check_divisor(divisor: int) -> int:
    """``divisor`` (clock cycles per bit, the clock over the baud rate) if usable, else an error."""
    if not isinstance(divisor, int) or divisor < 4:
        raise ValueError(
            f"UART divisor must be an integer of at least 4 clock cycles a bit, not {divisor!r}")
    return divisor


class _UARTEnd(wiring.Component):
    """What both ends share: the divisor, checked, and read-only."""

    def __init__(self, divisor: int):
        with constructing(self):
            self._divisor = check_divisor(divisor)
            super().__init__()

    @property
    def divisor(self) -> int:
        return self._divisor


class UARTTx(_UARTEnd):
    """Sends each byte of ``i`` on ``tx`` (idle high): a start bit, 8 data bits, a stop bit.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (the ``sync`` clock frequency over the baud rate), at least 4.

    Members
    -------
    i : In(stream.Signature(8))
        Bytes to send; ``ready`` while the line is idle.
    tx : Out(1)
        The serial line.
    """

    i: In(stream.Signature(8))
    tx: Out(1, init=1)

    def elaborate(self, platform):
        m = Module()
        timer = Signal(range(self._divisor))
        shift = Signal(10)  # stop bit, data, start bit: sent from bit 0
        bits = Signal(range(11))  # bits still to send

        m.d.comb += self.i.ready.eq((bits == 0) & (timer == 0))
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [shift.eq((1 << 9) | (self.i.payload << 1)), bits.eq(10)]
        with m.Elif(timer != 0):
            m.d.sync += timer.eq(timer - 1)
        with m.Elif(bits != 0):
            # the next bit; after the stop bit, ``timer`` holds ``ready`` low for its bit time
            m.d.sync += [
                self.tx.eq(shift[0]),
                shift.eq(shift >> 1),
                bits.eq(bits - 1),
                timer.eq(self._divisor - 1),
            ]
        return m


class UARTRx(_UARTEnd):
    """Receives bytes from ``rx`` (asynchronous to the clock; synchronized inside).

    A byte whose stop bit reads 0 is dropped and pulses ``frame_error`` (a break, noise or a
    wrong baud rate); a byte that arrives while ``o`` still holds the previous one is dropped and
    pulses ``overrun``. Neither stops the receiver: the next start bit is taken as usual.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, at least 4.

    Members
    -------
    rx : In(1)
        The serial line (idle high).
    o : Out(stream.Signature(8))
        Received bytes.
    frame_error, overrun : Out(1)
        One-cycle pulses, as above.
    """

    rx: In(1, init=1)
    o: Out(stream.Signature(8))
    frame_error: Out(1)
    overrun: Out(1)

    def elaborate(self, platform):
        m = Module()
        line = Signal(init=1)
        m.submodules.sync_rx = FFSynchronizer(self.rx, line, init=1)

        timer = Signal(range(self._divisor + self._divisor // 2))
        data = Signal(8)
        bit = Signal(range(10))  # data bits still to sample, then the stop bit

        m.d.sync += [self.frame_error.eq(0), self.overrun.eq(0)]
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~line):
                    # sample in the middle of data bit 0: 1.5 bit times after the start edge
                    m.d.sync += [timer.eq(self._divisor + self._divisor // 2 - 1), bit.eq(9)]
                    m.next = "BITS"
            with m.State("BITS"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(bit != 1):
                    m.d.sync += [
                        data.eq((line << 7) | (data >> 1)),
                        bit.eq(bit - 1),
                        timer.eq(self._divisor - 1),
                    ]
                with m.Else():  # the stop bit
                    with m.If(~line):
                        m.d.sync += self.frame_error.eq(1)
                        m.next = "BREAK"
                    with m.Elif(self.o.valid & ~self.o.ready):
                        m.d.sync += self.overrun.eq(1)
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += [self.o.payload.eq(data), self.o.valid.eq(1)]
                        m.next = "IDLE"
            with m.State("BREAK"):
                # wait for the line to go idle before looking for a start bit again
                with m.If(line):
                    m.next = "IDLE"
        return m
