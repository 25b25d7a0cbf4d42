# amaranth: UnusedElaboratable=no
"""The Winograd engine's output reorder memory in Amaranth's simulator: tile order in, raster
order out, under random gaps and backpressure."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth import signed, unsigned

from hwgen.hw.winograd_reorder import TileReorder

from simbench import run_benches


def run(dut: TileReorder, tiles: np.ndarray, rng, p_gap=0.1, p_stall=0.8):
    """Send ``tiles`` (images, TH, TW, G, 4, pe) in step order; returns the output pixels."""
    g, pe = dut.groups, dut.pe
    oh, ow = dut.out_hw
    width = dut.out_elem.width
    mask = (1 << width) - 1
    steps = [(gg, sum((int(v) & mask) << (p * width)
                      for p, v in enumerate(tiles[n, ty, tx, gg, k])))
             for n in range(tiles.shape[0]) for ty in range(tiles.shape[1])
             for tx in range(tiles.shape[2]) for gg in range(g) for k in range(4)]
    beats = tiles.shape[0] * oh * ow
    out, stalled = [], [0]

    async def writer(ctx):
        for group, word in steps:
            while rng.random() < p_gap:
                await ctx.tick()
            ctx.set(dut.y_valid, 1)
            ctx.set(dut.y_group, group)
            ctx.set(dut.y, word)
            await ctx.tick().until(dut.y_ready)
            ctx.set(dut.y_valid, 0)

    async def reader(ctx):
        for _ in range(50 * beats + 1000):
            ready = int(rng.random() >= p_stall)
            ctx.set(dut.o.ready, ready)
            _, _, valid, rdy, y_ready, payload = await ctx.tick().sample(
                dut.o.valid, dut.o.ready, dut.y_ready, dut.o.payload)
            stalled[0] += not y_ready
            if valid and rdy:
                out.append([int(payload[j]) for j in range(g * pe)])
            if len(out) == beats:
                return
        raise AssertionError(f"{len(out)} of {beats} pixels")

    run_benches(dut, writer, reader)
    return np.array(out), stalled[0]


def expected(tiles: np.ndarray, out_hw) -> np.ndarray:
    """Raster-order pixels: channel g·pe + p of pixel (y, x) is tile (y//2, x//2)'s value
    k = 2·(y%2) + x%2 of group g."""
    n_img, _, _, g, _, pe = tiles.shape
    oh, ow = out_hw
    return np.array([[tiles[n, y // 2, x // 2, gg, 2 * (y % 2) + x % 2, p]
                      for gg in range(g) for p in range(pe)]
                     for n in range(n_img) for y in range(oh) for x in range(ow)])


@pytest.mark.parametrize("pe, groups, tiles, out_hw, signed_out", [
    (1, 1, (2, 2), (4, 4), True),
    (2, 4, (4, 4), (8, 8), True),
    (3, 2, (4, 3), (7, 5), False),   # odd sizes: the last row and column are cropped
    (1, 3, (1, 1), (1, 2), True),
])
def test_reorder_sends_raster_order(pe, groups, tiles, out_hw, signed_out):
    rng = np.random.default_rng(pe * 100 + groups)
    shape = signed(5) if signed_out else unsigned(4)
    dut = TileReorder(out_elem=shape, pe=pe, groups=groups, tiles=tiles, out_hw=out_hw)
    lo, hi = (-16, 15) if signed_out else (0, 15)
    data = rng.integers(lo, hi + 1, size=(3, *tiles, groups, 4, pe))
    got, stalled = run(dut, data, rng)
    np.testing.assert_array_equal(got, expected(data, out_hw))
    assert stalled > 0  # the slow reader filled both banks: the writer was held


def test_reorder_validation():
    with pytest.raises(ValueError, match="pe=0"):
        TileReorder(out_elem=unsigned(4), pe=0, groups=1, tiles=(1, 1), out_hw=(2, 2))
    with pytest.raises(ValueError, match="not covered"):
        TileReorder(out_elem=unsigned(4), pe=1, groups=1, tiles=(2, 2), out_hw=(2, 4))
    with pytest.raises(TypeError):
        TileReorder(unsigned(4), 1, 1, (1, 1), (2, 2))  # keyword-only
