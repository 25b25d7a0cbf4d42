"""The board's link core (hwgen.boards.link) in Amaranth's simulator: frames in over a UART line
model, replies checked against the golden model and hwgen.frame. The same core's Verilog is
tested in cocotb on Icarus and Verilator (sim/board.py, tests/test_board_sim.py), with more
corrupt-frame cases."""

import io

import numpy as np
import pytest
from amaranth.hdl import Fragment
from amaranth.sim import Simulator

from board_fixtures import tiny_model
from hwgen import frame, golden
from hwgen.boards.link import LinkCore
from hwgen.hw.top import Accelerator

DIVISOR = 4
TIMEOUT = 30 * 10 * DIVISOR  # 30 byte times


def line(data: bytes, idle_bits: int = 2) -> list[int]:
    levels = [1] * idle_bits * DIVISOR
    for byte in data:
        for b in [0] + [(byte >> i) & 1 for i in range(8)] + [1]:
            levels += [b] * DIVISOR
    return levels


def decode_line(samples: list[int]) -> bytes:
    out, t = [], 0
    while t < len(samples) - 10 * DIVISOR:
        if samples[t] == 0:
            mid = t + DIVISOR // 2
            bits = [samples[mid + k * DIVISOR] for k in range(10)]
            assert bits[9] == 1, f"no stop bit at cycle {t}"
            out.append(sum(b << i for i, b in enumerate(bits[1:9])))
            t = mid + 9 * DIVISOR
        else:
            t += 1
    return bytes(out)


def exchange(core, steps):
    """Run ``steps`` (bytes to send, then cycles to listen) through ``core``; the replies."""
    levels = []
    for data, wait in steps:
        levels += line(data) + [1] * wait
    samples = []

    async def bench(ctx):
        for level in levels:
            ctx.set(core.rx, level)
            await ctx.tick()
            samples.append(ctx.get(core.tx))

    sim = Simulator(core)
    sim.add_clock(1e-6)
    if core.describe()["accel_domain"] == "accel":
        sim.add_clock(0.7e-6, domain="accel")  # faster and unrelated: the FIFOs cross
    sim.add_testbench(bench)
    sim.run()
    replies, stream = [], io.BytesIO(decode_line(samples))
    while stream.tell() < len(stream.getbuffer()):
        replies.append(frame.read_reply(stream.read))
    return replies


REPLY_WAIT = 70 * 10 * DIVISOR


@pytest.mark.parametrize("domain", ["accel"])  # one domain: tests/test_board_sim.py
def test_frames_are_answered_and_errors_recovered(domain):
    model = tiny_model()
    core = LinkCore(Accelerator(model), divisor=DIVISOR, timeout=TIMEOUT, max_count=2,
                    accel_domain=domain)
    x = np.random.default_rng(1).integers(0, 256, size=(3, *model.input_shape))
    exp = golden.run(model, x)
    good = frame.encode_request([frame.image_bytes(im) for im in x[:2]])
    bad_crc = bytearray(good)
    bad_crc[-1] ^= 0x40
    replies = exchange(core, [
        (b"\x00xyzH", 0), (good, REPLY_WAIT),  # garbage (with a lone "H") before a good frame
        (bytes(bad_crc), REPLY_WAIT),
        (good[:20], TIMEOUT + REPLY_WAIT),  # cut off inside the first image: SHORT
        (frame.encode_request([frame.image_bytes(x[2])]), REPLY_WAIT),
        (frame.encode_request([frame.image_bytes(im) for im in x]), REPLY_WAIT),  # 3 > max_count
        (good[:2] + b"\x07" + good[3:], REPLY_WAIT),  # version 7
        (good, REPLY_WAIT),
    ])
    statuses = [r.status for r in replies]
    assert statuses == [frame.Status.OK, frame.Status.BAD_CRC, frame.Status.SHORT,
                        frame.Status.OK, frame.Status.BAD_LENGTH, frame.Status.BAD_VERSION,
                        frame.Status.OK]
    for reply, images in zip([replies[0], replies[3], replies[6]], [[0, 1], [2], [0, 1]]):
        assert [list(r.scores) for r in reply.results] == exp.scores[images].tolist()
        assert [r.argmax for r in reply.results] == exp.argmax[images].tolist()
        # first pixel to result: at least the accelerator's own time for the image
        assert all(r.cycles >= core.accelerator.cycles_per_image for r in reply.results)


def test_link_parameters_are_checked():
    acc = Accelerator(tiny_model())
    Fragment.get(acc, None)  # used, even though no core takes it
    with pytest.raises(ValueError, match="at least 20 bit times"):
        LinkCore(acc, divisor=8, timeout=100)
    with pytest.raises(ValueError, match="max_count must be 1..255"):
        LinkCore(acc, divisor=8, timeout=1000, max_count=0)
    with pytest.raises(ValueError, match="UART divisor"):
        LinkCore(acc, divisor=2, timeout=1000)
