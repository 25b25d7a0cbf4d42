"""cocotb tests of the board top-level's link core (``board_link``, see
:func:`hwgen.boards.bench.simulate_board`): the host's side of the UART, in frames.

================  ==============================================================================
``board_frames``  real test images of a build (its ``vectors.npz``) in frames, every reply
                  checked against the build's golden scores and argmax; then a bad CRC, a short
                  frame, garbage between frames, a frame cut off by a host reset (the host starts
                  a new frame in the middle of the old one) and one cut off by a board reset:
                  each gets its error reply (the board reset: none, the board forgot) and the
                  next good frame is answered.
``board_bridge``  a pseudo-terminal bridged to the UART model, for ``hwgen infer --port``.
================  ==============================================================================

Settings come in the environment: ``HWGEN_BUILD_DIR``, ``HWGEN_LINK`` (the link's JSON
description: divisor, timeout, max_count, ...), ``HWGEN_IMAGES``, ``HWGEN_RESULT`` (the JSON
summary), ``HWGEN_BOARD_TEST`` (which test runs) and, for the bridge, ``HWGEN_PTY_FILE`` (where
to write the terminal's path), ``HWGEN_BRIDGE_STOP`` (a file whose appearance ends it) and
``HWGEN_BRIDGE_IDLE_S`` (wall seconds of host silence that end it anyway). The clocks: ``clk``
(the line's) has a 10 ns period and ``accel_clk`` 7 ns, unrelated, so
the FIFOs really cross; the baud rate is scaled to ``clk / divisor`` (12.5 Mbaud at divisor 8)
instead of the boards' 115200, which changes nothing but the number of cycles per bit.
"""

from __future__ import annotations

import io
import json
import os
import select
import time
import tty
from pathlib import Path

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, Timer

from hwgen import frame
from hwgen.sim.uart import UARTModel

CLK_NS, ACCEL_NS = 10, 7
_TEST = os.environ.get("HWGEN_BOARD_TEST", "board_frames")


async def _start(dut):
    link = json.loads(os.environ["HWGEN_LINK"])
    Clock(dut.clk, CLK_NS, unit="ns").start()
    if link["accel_domain"] == "accel":
        Clock(dut.accel_clk, ACCEL_NS, unit="ns").start()
    uart = UARTModel(dut.rx, dut.tx, link["divisor"] * CLK_NS)
    await _reset(dut, link)
    cocotb.start_soon(uart.listen())
    return link, uart


async def _reset(dut, link):
    dut.rst.value = 1
    if link["accel_domain"] == "accel":
        dut.accel_rst.value = 1
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    if link["accel_domain"] == "accel":
        dut.accel_rst.value = 0
    await ClockCycles(dut.clk, 4)


@cocotb.test(skip=_TEST != "board_frames")
async def board_frames(dut):
    build = Path(os.environ["HWGEN_BUILD_DIR"])
    with np.load(build / "vectors.npz", allow_pickle=False) as v:
        n = min(int(os.environ.get("HWGEN_IMAGES") or len(v["x"])), len(v["x"]))
        x, scores, argmax = v["x"][:n], v["scores"][:n], v["argmax"][:n]
    link, uart = await _start(dut)
    byte_ns = 10 * link["divisor"] * CLK_NS
    timeout_ns = link["timeout_cycles"] * CLK_NS
    reply_ns = timeout_ns + 4 * byte_ns  # a reply starts within the timeout of the frame's end
    images = [frame.image_bytes(im) for im in x]
    cases = []

    async def exchange(name, data, expect, which=None, gap_bits=0):
        """Send ``data``; the reply must have status ``expect`` (None: no reply at all) and,
        if OK, the golden results of images ``which``."""
        await uart.send(data, gap_bits)
        got = await uart.collect(reply_ns, 30 * byte_ns)
        case = {"case": name, "expect": None if expect is None else expect.name}
        try:
            replies = []
            stream = io.BytesIO(got)
            while stream.tell() < len(got):
                replies.append(frame.read_reply(stream.read))
        except frame.FrameError as e:
            case.update(ok=False, error=f"undecodable reply: {e} ({got.hex()})")
            cases.append(case)
            return case
        case["statuses"] = [r.status.name for r in replies]
        if expect is None:
            case["ok"] = not replies
        elif len(replies) != 1 or replies[0].status != expect:
            case["ok"] = False
        else:
            case["ok"] = True
            if expect == frame.Status.OK:
                res = replies[0].results
                exp = [(scores[i].tolist(), int(argmax[i])) for i in which]
                case["mismatches"] = [i for i, r, e in zip(which, res, exp)
                                      if (list(r.scores), r.argmax) != e]
                case["cycles"] = [r.cycles for r in res]
                case["ok"] = len(res) == len(which) and not case["mismatches"]
        cases.append(case)
        return case

    # Every image, in frames of max_count, garbage (with a lone "H") between two of them.
    k = link["max_count"]
    for start in range(0, n, k):
        which = list(range(start, min(n, start + k)))
        garbage = b"\x00garbage\xffH" if start == k else b""
        await exchange(f"images {which[0]}..{which[-1]}", garbage
                       + frame.encode_request([images[i] for i in which]), frame.Status.OK, which)
    one = frame.encode_request([images[0]])
    bad = bytearray(one)
    bad[len(bad) // 2] ^= 0x10
    await exchange("bad CRC", bytes(bad), frame.Status.BAD_CRC)
    await exchange("good after bad CRC", one, frame.Status.OK, [0])
    await exchange("short frame", one[:frame.HEADER.size + len(images[0]) // 2 + 1],
                   frame.Status.SHORT)
    await exchange("good after short", one, frame.Status.OK, [0])
    # A host reset: the old frame's first bytes, then a new frame at once. The new frame's bytes
    # complete the old one, whose CRC fails; the rest of it is skipped; the host sends it again.
    two = frame.encode_request([images[min(1, n - 1)]])
    half = one[:frame.HEADER.size + len(images[0]) // 2]
    case = await exchange("cut by a host reset", half + two, frame.Status.BAD_CRC)
    if not case["ok"] and case.get("statuses") and "OK" not in case["statuses"]:
        case["ok"] = True  # any error reply will do; which depends on the image bytes
    await exchange("good after host reset", two, frame.Status.OK, [min(1, n - 1)])
    # A board reset in the middle of a frame: no reply, and the next frame is answered.
    await uart.send(one[:frame.HEADER.size + 1])
    await _reset(dut, link)
    await exchange("good after board reset", one, frame.Status.OK, [0])

    summary = {"images": n, "cases": cases, "passed": all(c["ok"] for c in cases),
               "cycles_per_image": [c for case in cases for c in case.get("cycles", [])]}
    Path(os.environ["HWGEN_RESULT"]).write_text(json.dumps(summary, indent=2) + "\n")
    bad_cases = [c for c in cases if not c["ok"]]
    assert not bad_cases, f"{len(bad_cases)} cases failed; first: {bad_cases[0]}"


@cocotb.test(skip=_TEST != "board_bridge")
async def board_bridge(dut):
    """Bytes from a pseudo-terminal's master to the UART, and back, until the host is quiet."""
    link, uart = await _start(dut)
    master, slave = os.openpty()
    tty.setraw(slave)
    Path(os.environ["HWGEN_PTY_FILE"]).write_text(os.ttyname(slave))
    idle_s = float(os.environ.get("HWGEN_BRIDGE_IDLE_S", "60"))
    stop = Path(os.environ.get("HWGEN_BRIDGE_STOP", "/nonexistent"))
    last = time.monotonic()
    moved = 0
    step_ns = 10 * link["divisor"] * CLK_NS
    try:
        while time.monotonic() - last < idle_s and not stop.exists():
            if select.select([master], [], [], 0)[0]:
                data = os.read(master, 4096)
                await uart.send(data)
                moved += len(data)
                last = time.monotonic()
            else:
                await Timer(step_ns, unit="ns")
            if uart.received:
                os.write(master, bytes(uart.received))
                moved += len(uart.received)
                uart.received.clear()
                last = time.monotonic()
            elif int(dut.busy.value) == 0 and not select.select([master], [], [], 0)[0]:
                time.sleep(0.001)  # the board waits for the host: do not run the clock ahead
    finally:
        os.close(slave)
        os.close(master)
    Path(os.environ["HWGEN_RESULT"]).write_text(json.dumps({"bytes": moved, "passed": True}))
