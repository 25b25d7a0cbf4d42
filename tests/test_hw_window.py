# amaranth: UnusedElaboratable=no
"""The sliding-window generator (any stride, padding and kernel), in Amaranth's simulator, against
:func:`hwgen.golden.im2col` as the reference of which pixels each output pixel reads."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth import unsigned
from amaranth.sim import Simulator

from hwgen import golden
from hwgen.hw.window import WindowGenerator, tap_order


def expected_beats(images, kh, kw, stride, padding, simd, groups):
    """``(taps, first, last, group)`` of every beat, from im2col's unfold order ``(c, ky, kx)``
    put in the window's :func:`tap_order` ``(ky, kx, c)``."""
    n, c = images.shape[:2]
    cols, _ = golden.im2col(images, kh, kw, stride, padding)  # (N, L, C*KH*KW)
    order = [ch * kh * kw + ky * kw + kx for ky, kx, ch in tap_order(c, kh, kw)]
    cols = cols[:, :, order]
    steps = c * kh * kw // simd
    beats = []
    for img in cols:
        for pixel in img:
            for g in range(groups):
                for s in range(steps):
                    beats.append((tuple(int(v) for v in pixel[s * simd:(s + 1) * simd]),
                                  int(s == 0), int(s == steps - 1), g))
    return beats


def run_window(win: WindowGenerator, images, rng, p_gap=0.3, p_stall=0.3, max_cycles=100_000):
    """Stream ``images`` in with random gaps while ``en`` stalls at random; return the beats the
    consumer takes (``valid`` on an enabled cycle)."""
    n = images.shape[0]
    want = n * win.OH * win.OW * win.groups * win.steps
    pixels = [[int(v) for v in images[i, :, y, x]] for i in range(n)
              for y in range(win.H) for x in range(win.W)]
    got = []

    async def producer(ctx):
        for px in pixels:
            if rng.random() < p_gap:
                await ctx.tick().repeat(int(rng.integers(1, 4)))
            ctx.set(win.i.payload, px)
            ctx.set(win.i.valid, 1)
            await ctx.tick().until(win.i.ready)
            ctx.set(win.i.valid, 0)

    async def consumer(ctx):
        cycle = 0
        while len(got) < want:
            ctx.set(win.en, int(rng.random() >= p_stall))
            _, _, en, valid, taps, first, last, group = await ctx.tick().sample(
                win.en, win.valid, win.taps, win.first, win.last, win.group)
            if en and valid:
                got.append((tuple(int(taps[j]) for j in range(win.simd)), int(first), int(last),
                            int(group)))
            cycle += 1
            assert cycle < max_cycles, f"timeout: {len(got)} of {want} beats"
        ctx.set(win.en, 1)
        for _ in range(8):
            _, _, valid = await ctx.tick().sample(win.valid)
            assert not valid, "the window issued more beats than the images have"

    sim = Simulator(win)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    return got


CASES = [
    # (C, H, W, K, pad, stride, simd, groups)
    (1, 8, 8, 3, 1, 2, 1, 1),     # the digits' first layer at stride 2, one tap per beat
    (2, 7, 9, 3, 0, 2, 2, 2),     # odd H, W; no padding: the last row and column are never read
    (3, 9, 6, 5, 2, 2, 15, 1),    # kernel 5, padding 2, five read ports (whole pixels)
    (2, 10, 7, 5, 1, 2, 2, 1),    # kernel 5, padding 1, even H, odd W
    (2, 6, 6, 5, 0, 2, 1, 1),     # kernel 5 without padding: OH = OW = 1
    (2, 5, 6, 3, 2, 2, 6, 2),     # padding 2 = more zero rows than one stride
    (1, 7, 7, 1, 0, 2, 1, 1),     # kernel 1: every other row and column skipped
    (4, 6, 5, 1, 0, 3, 2, 1),     # stride 3 > kernel 1, slices of a pixel (simd < C)
    (4, 8, 6, 3, 1, 2, 2, 3),     # slices, three groups
    (1, 3, 3, 3, 0, 4, 9, 1),     # stride larger than the image: one window
    (3, 5, 7, 3, 1, 1, 3, 2),     # stride 1 still
]


@pytest.mark.parametrize("case", CASES, ids=["c{}-{}x{}-k{}-p{}-s{}-simd{}-g{}".format(*c) for c in CASES])
def test_window_matches_im2col(case):
    c, h, w, k, pad, stride, simd, groups = case
    rng = np.random.default_rng(abs(hash(case)) & 0xFFFF)
    win = WindowGenerator(c, h, w, (k, k), pad, unsigned(4), simd, groups, stride=stride)
    assert (win.OH, win.OW) == ((h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1)
    assert win.R == max(min(k + stride, h), k)
    images = rng.integers(1, 16, size=(3, c, h, w))  # no zeros: a padded 0 cannot pass for a pixel
    got = run_window(win, images, rng)
    assert got == expected_beats(images, k, k, stride, pad, simd, groups)


def test_fast_input_and_no_stalls():
    """A fast reader (one beat per output pixel) fed without gaps: the flow control alone keeps
    the rows the windows need."""
    rng = np.random.default_rng(7)
    win = WindowGenerator(2, 9, 8, (3, 3), 1, unsigned(4), 18, 1, stride=2)
    images = rng.integers(1, 16, size=(4, 2, 9, 8))
    got = run_window(win, images, rng, p_gap=0.0, p_stall=0.0)
    assert got == expected_beats(images, 3, 3, 2, 1, 18, 1)


def test_stride_is_validated():
    with pytest.raises(TypeError, match=r"^stride must be a positive integer, not 0$"):
        WindowGenerator(1, 8, 8, (3, 3), 1, unsigned(4), 1, 1, stride=0)
