"""cocotb test of a build folder's ``hwgen_top``: stream images in, compare every result beat
with :func:`hwgen.golden.run`, bit for bit (every score, signed, and the argmax).

Run by :func:`hwgen.simulate.simulate`, which passes its settings in the environment:

``HWGEN_BUILD_DIR``     the build folder (manifest.json, model.json/.npz, vectors.npz)
``HWGEN_IMAGES``        how many of the vectors to stream (the first N)
``HWGEN_BACKPRESSURE``  "1": random gaps on ``pixels.valid`` and random lows on ``result.ready``
``HWGEN_SEED``          seed of that randomness
``HWGEN_MAX_CYCLES``    cycle limit; the test fails when the results are not all out by then
``HWGEN_RESULT``        where to write the JSON summary (mismatches, cycles, wall time)

Timing discipline (the same on Icarus and on cycle-based Verilator): the testbench writes
its inputs just after a falling clock edge and samples in the ``ReadOnly`` phase of that
half cycle, when everything combinational has settled; a transfer happens at the next
rising edge exactly when the sampled ``valid & ready`` is high.  While it waits for a long
time (the design busy, ``ready`` or ``valid`` low) it sleeps on the rising edge of that
signal instead of waking up every cycle.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge, with_timeout

from hwgen import golden, ir
from hwgen.buildfolder import BuildFolder

PERIOD_NS = 10


def _env_int(name, default):
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


def _signed(value: int, bits: int) -> int:
    return value - (1 << bits) if value >> (bits - 1) & 1 else value


def decode_result(word: int, classes: int, score_bits: int, argmax_offset: int, argmax_bits: int,
                  signed: bool = True):
    """Split a result payload into ``(scores, argmax)``; scores are ``score_bits`` wide, signed
    unless ``signed`` is False (a raw output after a ReLU)."""
    mask = (1 << score_bits) - 1
    scores = [word >> (i * score_bits) & mask for i in range(classes)]
    scores = [_signed(v, score_bits) for v in scores] if signed else scores
    argmax = word >> argmax_offset & ((1 << argmax_bits) - 1)
    return scores, argmax


def pack_pixels(x: np.ndarray, bits: int) -> list[int]:
    """``(C, H, W)`` image → one integer per pixel in raster order, channel c at bits [c*b, (c+1)*b)."""
    c, h, w = x.shape
    flat = x.reshape(c, h * w).astype(object)
    words = []
    for p in range(h * w):
        word = 0
        for ch in range(c):
            word |= int(flat[ch, p]) << (ch * bits)
        words.append(word)
    return words


@cocotb.test()
async def stream_images(dut):
    folder = BuildFolder(os.environ["HWGEN_BUILD_DIR"])
    manifest = folder.manifest()
    model = ir.Model.load(folder.path)
    with np.load(folder.vectors, allow_pickle=False) as v:
        x_all, labels_all = v["x"], v["labels"]
        # Directed vectors (zero and full-scale images, hwgen.flow.directed_images) go first.
        x_dir = v["x_directed"] if "x_directed" in v.files else x_all[:0]
    n = min(_env_int("HWGEN_IMAGES", len(x_all)), len(x_all))
    d = len(x_dir)
    x = np.concatenate([x_dir, x_all[:n]])
    labels = np.concatenate([np.full(d, -1), labels_all[:n]])
    backpressure = os.environ.get("HWGEN_BACKPRESSURE", "0") == "1"
    rng = random.Random(_env_int("HWGEN_SEED", 0))
    ports = manifest["ports"]
    pix, res = ports["pixels"], ports["result"]
    c, h, w = manifest.get("input_shape", model.input_shape)
    per_image = manifest.get("cycles_per_image") or 4 * c * h * w + 64
    max_cycles = _env_int("HWGEN_MAX_CYCLES",
                          int(per_image * max(n + d, 1) * 4 + 1000) * (3 if backpressure else 1))

    expected = golden.run(model, x)
    beats = [pack_pixels(img, pix["bits"]) for img in x]

    clock = Clock(dut.clk, PERIOD_NS, unit="ns")
    clock.start(start_high=False)
    dut.rst.value = 1
    dut.pixels__valid.value = 0
    dut.pixels__payload.value = 0
    dut.result__ready.value = 0
    for _ in range(3):
        await FallingEdge(dut.clk)
    dut.rst.value = 0
    t_start = get_sim_time("ns")
    wall_start = time.perf_counter()

    got: list[tuple[list[int] | None, int | None, str]] = []

    async def driver():
        for words in beats:
            for word in words:
                while backpressure and rng.random() < 0.3:  # a gap on valid
                    dut.pixels__valid.value = 0
                    await FallingEdge(dut.clk)
                dut.pixels__payload.value = word
                dut.pixels__valid.value = 1
                while True:
                    await ReadOnly()
                    if dut.pixels__ready.value == 1:
                        await FallingEdge(dut.clk)  # transferred at the rising edge in between
                        break
                    await RisingEdge(dut.pixels__ready)
                    await FallingEdge(dut.clk)
        dut.pixels__valid.value = 0

    async def monitor():
        while len(got) < n + d:
            ready = 0 if backpressure and rng.random() < 0.3 else 1
            dut.result__ready.value = ready
            await ReadOnly()
            valid = dut.result__valid.value == 1
            if valid and ready:
                raw = dut.result__payload.value
                if raw.is_resolvable:
                    scores, arg = decode_result(raw.to_unsigned(), res["classes"], res["score_bits"],
                                                res["argmax_offset"], res["argmax_bits"],
                                                res.get("score_signed", True))
                    got.append((scores, arg, ""))
                else:
                    got.append((None, None, str(raw)))
                await FallingEdge(dut.clk)
            elif ready and not valid:
                await RisingEdge(dut.result__valid)
                await FallingEdge(dut.clk)
            else:
                await FallingEdge(dut.clk)
        dut.result__ready.value = 0

    cocotb.start_soon(driver())
    timed_out = False
    try:
        await with_timeout(cocotb.start_soon(monitor()), max_cycles * PERIOD_NS, "ns")
    except TimeoutError:
        timed_out = True
    wall = time.perf_counter() - wall_start
    cycles = int(round((get_sim_time("ns") - t_start) / PERIOD_NS))

    mismatches = []
    correct = 0
    # A raw-output build (no argmax field): the values alone are compared, no accuracy.
    classify = res["argmax_bits"] > 0
    for i, (scores, arg, raw) in enumerate(got):
        exp_scores = [int(v) for v in expected.scores[i]]
        exp_arg = int(expected.argmax[i]) if classify else None
        arg = arg if classify else None
        if scores != exp_scores or arg != exp_arg:
            where = {"index": i - d} if i >= d else {"directed": i}
            mismatches.append({**where, "expected": {"scores": exp_scores, "argmax": exp_arg},
                               "got": {"scores": scores, "argmax": arg, **({"raw": raw} if raw else {})}})
        if arg is not None and arg == int(labels[i]):
            correct += 1
    # "images" and the accuracies count the user's images; "received" and the rates all images.
    summary = {
        "images": n, "directed": d, "received": len(got), "timed_out": timed_out,
        "max_cycles": max_cycles, "mismatches": mismatches,
        "passed": not mismatches and not timed_out and len(got) == n + d,
        "accuracy": correct / n if n and classify else None,
        "golden_accuracy": (float((expected.argmax[d:] == labels[d:]).mean())
                            if n and classify else None),
        "cycles": cycles, "cycles_per_image": cycles / (n + d) if n + d else None,
        "wall_s": wall, "images_per_s": (n + d) / wall if wall > 0 else None,
        "backpressure": backpressure,
    }
    out = os.environ.get("HWGEN_RESULT")
    if out:
        Path(out).write_text(json.dumps(summary, indent=2) + "\n")
    assert not timed_out, f"timeout: {len(got)} of {n + d} results after {max_cycles} cycles"
    assert len(got) == n + d
    assert not mismatches, (f"{len(mismatches)} of {n + d} images differ from the golden model; "
                            f"first: {mismatches[0]}")
