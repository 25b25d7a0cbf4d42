"""A cocotb model of the board's UART line (8N1, LSB first), for the board testbench.

:class:`UARTModel` drives the design's ``rx`` and listens to its ``tx`` at ``bit_ns`` a bit:
:meth:`UARTModel.send` writes bytes, and every byte the design sends lands in
``UARTModel.received``, so a
test reads replies with :func:`hwgen.frame.read_reply` over what :meth:`UARTModel.collect`
returns.
"""

from __future__ import annotations

from cocotb.triggers import Event, FallingEdge, First, Timer


class UARTModel:
    """The host's end of the line: ``rx``/``tx`` are the design's pins."""

    def __init__(self, rx, tx, bit_ns: int):
        self.rx, self.tx, self.bit_ns = rx, tx, bit_ns
        self.rx.value = 1
        self.received = bytearray()
        self._event = Event()

    async def send(self, data: bytes, gap_bits: int = 0) -> None:
        """Send ``data``, ``gap_bits`` idle bit times after each byte."""
        for byte in data:
            for level in [0] + [(byte >> i) & 1 for i in range(8)] + [1] * (1 + gap_bits):
                self.rx.value = level
                await Timer(self.bit_ns, unit="ns")

    async def listen(self) -> None:
        """Forever: decode the design's ``tx`` (start this with ``cocotb.start_soon``)."""
        while True:
            await FallingEdge(self.tx)
            await Timer(self.bit_ns * 3 // 2, unit="ns")
            byte = 0
            for i in range(8):
                byte |= int(self.tx.value) << i
                await Timer(self.bit_ns, unit="ns")
            assert int(self.tx.value) == 1, "the design's stop bit is 0"
            self.received.append(byte)
            self._event.set()

    async def collect(self, first_ns: int, quiet_ns: int) -> bytes:
        """Every byte received from now on: waits up to ``first_ns`` for the first, then until
        the line has been quiet for ``quiet_ns``; decode it with :func:`hwgen.frame.read_reply`
        over :class:`io.BytesIO`."""
        wait = first_ns
        while True:
            self._event.clear()
            seen = len(self.received)
            await First(self._event.wait(), Timer(wait, unit="ns"))
            if len(self.received) == seen and not self._event.is_set():
                break
            wait = quiet_ns
        data = bytes(self.received)
        self.received.clear()
        return data
