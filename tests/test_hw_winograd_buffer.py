# amaranth: UnusedElaboratable=no
"""The Winograd engine's tile-pair buffer in Amaranth's simulator: the columns of the 4×4 tiles
(step 2) of the zero-padded image, under input gaps, clock-enable stalls and held beats."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth import unsigned
from numpy.lib.stride_tricks import sliding_window_view

from hwgen.hw.winograd_buffer import TilePairBuffer

from simbench import run_benches


def tiles_of(images: np.ndarray, padding: int) -> np.ndarray:
    """``(N, C, TH, TW, 4, 4)``: the tiles ``hwgen.golden.winograd_adder`` computes on, the
    image zero-padded by ``padding`` and completed with zeros to whole tiles."""
    _, _, h, w = images.shape
    th, tw = (h + 2 * padding - 1) // 2, (w + 2 * padding - 1) // 2
    x = np.pad(images, ((0, 0), (0, 0), (padding, 2 * th + 2 - h - padding),
                        (padding, 2 * tw + 2 - w - padding)))
    return sliding_window_view(x, (4, 4), axis=(2, 3))[:, :, ::2, ::2]


def expected_columns(images, padding, groups):
    """Per column, in schedule order: ``(data[4], index, first, last, beat, group)``."""
    d = tiles_of(images, padding)
    n, c, th, tw = d.shape[:4]
    return [(list(d[i, ch, ty, tx, :, j]), j, ch == 0, ch == c - 1, g * c + ch, g)
            for i in range(n) for ty in range(th) for tx in range(tw)
            for g in range(groups) for ch in range(c) for j in range(4)]


def run(dut: TilePairBuffer, images: np.ndarray, rng, *, p_gap=0.0, p_stall=0.0, p_hold=0.0):
    """Feed ``images``; returns the columns taken (one per enabled cycle with ``valid``), the
    beats that started while ``hold`` was high, and the cycles to the last column."""
    n, c, h, w = images.shape
    want = n * dut.columns_per_image
    got, held_starts, cycles = [], [0], [0]

    async def source(ctx):
        for img in images:
            for y in range(h):
                for x in range(w):
                    while rng.random() < p_gap:
                        await ctx.tick()
                    ctx.set(dut.i.payload, [int(v) for v in img[:, y, x]])
                    ctx.set(dut.i.valid, 1)
                    await ctx.tick().until(dut.i.ready)
                    ctx.set(dut.i.valid, 0)

    async def sink(ctx):
        cols = dut.columns
        hold_at_issue = 0
        for cycle in range(40 * want + 1000):
            en = int(rng.random() >= p_stall)
            hold = int(rng.random() < p_hold)
            ctx.set(dut.en, en)
            ctx.set(cols.hold, hold)
            sampled = await ctx.tick().sample(cols.valid, cols.data, cols.index, cols.first,
                                              cols.last, cols.beat, cols.group)
            valid, data, index, first, last, beat, group = sampled[2:]
            if not en:
                continue
            if valid:
                # Issued in the previous enabled cycle, which saw hold_at_issue.
                held_starts[0] += index == 0 and hold_at_issue
                got.append(([int(v) for v in data], index, bool(first), bool(last), beat, group))
                if len(got) == want:
                    cycles[0] = cycle + 1
                    return
            hold_at_issue = hold
        raise AssertionError(f"{len(got)} of {want} columns")

    run_benches(dut, source, sink)
    return got, held_starts[0], cycles[0]


CASES = [
    # (C, H, W, padding, groups)
    (1, 8, 8, 1, 1),
    (3, 7, 5, 1, 2),    # odd output sizes: the tiles completed with zeros
    (2, 6, 6, 0, 1),
    (1, 3, 3, 1, 2),    # an image smaller than the line buffer
    (2, 5, 9, 0, 3),
]


@pytest.mark.parametrize("case", CASES, ids=["x".join(map(str, c)) for c in CASES])
def test_columns_are_the_golden_tiles(case):
    c, h, w, pad, groups = case
    rng = np.random.default_rng(sum(case))
    images = rng.integers(1, 16, size=(3, c, h, w))  # no zeros: the padding shows
    dut = TilePairBuffer(channels=c, height=h, width=w, padding=pad, elem_shape=unsigned(4),
                         groups=groups)
    got, held, _ = run(dut, images, rng, p_gap=0.3, p_stall=0.3, p_hold=0.3)
    want = expected_columns(images, pad, groups)
    assert len(got) == len(want)
    for k, (g, e) in enumerate(zip(got, want)):
        assert g == e, f"column {k}: got {g}, want {e}"
    assert held == 0


def test_one_column_per_cycle():
    """Fed without gaps and never stalled, the buffer issues a column every cycle once an
    image's first tile row has arrived."""
    rng = np.random.default_rng(5)
    images = rng.integers(0, 16, size=(4, 2, 8, 8))
    dut = TilePairBuffer(channels=2, height=8, width=8, padding=1, elem_shape=unsigned(4),
                         groups=2)
    got, _, cycles = run(dut, images, rng)
    assert got == expected_columns(images, 1, 2)
    fill = 2 * 3 * 8  # the first tile row's three input rows, a pixel per channel per cycle
    assert cycles <= 4 * dut.columns_per_image + fill + 4


def test_validation():
    with pytest.raises(ValueError, match=r"^padding must be 0 or 1, not 2$"):
        TilePairBuffer(channels=1, height=8, width=8, padding=2, elem_shape=unsigned(4), groups=1)
    with pytest.raises(ValueError, match=r"too small for a 3×3 kernel"):
        TilePairBuffer(channels=1, height=2, width=8, padding=0, elem_shape=unsigned(4), groups=1)
    with pytest.raises(TypeError, match=r"^groups must be a positive integer, not 0$"):
        TilePairBuffer(channels=1, height=8, width=8, padding=1, elem_shape=unsigned(4), groups=0)
    with pytest.raises(TypeError):
        TilePairBuffer(1, 8, 8, 1, unsigned(4), 1)  # keyword-only
