"""The board link's UART (hwgen.hw.uart) against a Python model of the 8N1 line."""

import pytest
from amaranth.sim import Simulator

from hwgen.hw.uart import UARTRx, UARTTx

DATA = bytes([0x00, 0xFF, 0x55, 0xAA, 0x48, 0x57, 0x01, 0x80, 0x7E])


def line_levels(data: bytes, divisor: int, *, stop=1, idle=3) -> list[int]:
    """The line, one level per clock cycle, carrying ``data`` 8N1 (``stop=0``: framing error)."""
    levels = [1] * idle * divisor
    for byte in data:
        for b in [0] + [(byte >> i) & 1 for i in range(8)] + [stop]:
            levels += [b] * divisor
        levels += [1] * divisor
    return levels + [1] * idle * divisor


def decode_levels(levels: list[int], divisor: int) -> bytes:
    """The bytes on a line sampled once a cycle: each start edge, then mid-bit samples."""
    out, t = [], 0
    while t < len(levels):
        if levels[t] == 0:
            mid = t + divisor // 2
            bits = [levels[mid + k * divisor] for k in range(10)]
            assert bits[0] == 0 and bits[9] == 1, f"bad framing at cycle {t}: {bits}"
            out.append(sum(b << i for i, b in enumerate(bits[1:9])))
            t = mid + 9 * divisor
        else:
            t += 1
    return bytes(out)


def run_rx(levels, divisor, *, ready_every=1):
    dut = UARTRx(divisor)
    got, errors, overruns = [], [], []

    async def bench(ctx):
        for cycle, level in enumerate(levels):
            ctx.set(dut.rx, level)
            ctx.set(dut.o.ready, cycle % ready_every == 0)
            _, _, valid, ready, payload, fe, ov = await ctx.tick().sample(
                dut.o.valid, dut.o.ready, dut.o.payload, dut.frame_error, dut.overrun)
            if valid and ready:
                got.append(payload)
            errors.append(fe)
            overruns.append(ov)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return bytes(got), sum(errors), sum(overruns)


@pytest.mark.parametrize("divisor", [4, 5, 16, 104])
def test_rx_receives_every_byte(divisor):
    got, errors, overruns = run_rx(line_levels(DATA, divisor), divisor)
    assert (got, errors, overruns) == (DATA, 0, 0)


def test_rx_drops_a_byte_without_stop_bit_and_recovers():
    divisor = 8
    levels = line_levels(b"\x12", divisor) + line_levels(b"\x34", divisor, stop=0)
    levels += [0] * 20 * divisor + line_levels(b"\x56\x78", divisor)  # a break, then good bytes
    got, errors, overruns = run_rx(levels, divisor)
    # two framing errors: the byte without its stop bit, and the break (one long low byte)
    assert (got, errors, overruns) == (b"\x12\x56\x78", 2, 0)


def test_rx_overrun_drops_the_newer_byte():
    divisor = 4
    got, _, overruns = run_rx(line_levels(b"\x01\x02\x03", divisor), divisor, ready_every=10**6)
    assert overruns == 2  # the first byte is held (ready only in cycle 0), the others dropped


@pytest.mark.parametrize("divisor", [4, 7, 16])
def test_tx_sends_every_byte(divisor):
    dut = UARTTx(divisor)
    levels = []

    async def source(ctx):
        for byte in DATA:
            ctx.set(dut.i.payload, byte)
            ctx.set(dut.i.valid, 1)
            await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)

    async def line(ctx):
        for _ in range(len(DATA) * 11 * divisor + 50):
            levels.append(ctx.get(dut.tx))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(source, background=True)
    sim.add_testbench(line)
    sim.run()
    assert decode_levels(levels, divisor) == DATA
    # back to back: a byte takes 10 bit times (start, 8 data, stop) and one cycle to take the next
    first = levels.index(0)
    assert len(levels) - first - levels[::-1].index(0) <= len(DATA) * (10 * divisor + 1)


@pytest.mark.parametrize("bad", [3, 0, 4.5, None])
def test_divisor_refused(bad):
    with pytest.raises(ValueError, match="UART divisor"):
        UARTRx(bad)
