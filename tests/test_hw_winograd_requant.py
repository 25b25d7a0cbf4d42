# amaranth: UnusedElaboratable=no
"""The Winograd engine's requantization stage in Amaranth's simulator: finished tiles in, steps
of ``pe`` requantized values out, against hwgen.golden, under a stalling consumer."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth import signed

from hwgen import golden
from hwgen.hw.conv import requant_slots
from hwgen.hw.requant import requant_shape
from hwgen.hw.winograd_requant import TileRequant

from simbench import run_benches
from test_hw_conv import random_requant


def run(dut: TileRequant, tiles: np.ndarray, groups: int, rng, *, p_gap=0.0, p_stall=0.0):
    """Offer ``tiles`` ``(T, groups, pe, 4)`` (magnitudes) as the lanes would: ``done`` with
    the tile until an enabled cycle takes it.  Returns the steps taken ``(values, group)`` and
    the cycles the tile side was stopped for."""
    pe, out = tiles.shape[2], requant_shape(dut.requant)
    want = tiles.shape[0] * groups * 4
    got, stopped = [], [0]

    async def producer(ctx):
        for t in range(tiles.shape[0]):
            for g in range(groups):
                while rng.random() < p_gap:
                    await ctx.tick()
                ctx.set(dut.tiles.y, [[int(v) for v in tiles[t, g, p]] for p in range(pe)])
                ctx.set(dut.tiles.group, g)
                ctx.set(dut.tiles.done, 1)
                await ctx.tick().until(dut.tile_en)
                ctx.set(dut.tiles.done, 0)

    async def consumer(ctx):
        for _ in range(50 * want + 200):
            ctx.set(dut.step_ready, int(rng.random() >= p_stall))
            _, _, valid, ready, step, group, tile_en = await ctx.tick().sample(
                dut.step_valid, dut.step_ready, dut.step, dut.step_group, dut.tile_en)
            stopped[0] += not tile_en
            if valid and ready:
                values = [(step >> (p * out.width)) & ((1 << out.width) - 1) for p in range(pe)]
                if out.signed:
                    values = [v - (v >> (out.width - 1) << out.width) for v in values]
                got.append((values, group))
                if len(got) == want:
                    return
        raise AssertionError(f"{len(got)} of {want} steps")

    run_benches(dut, producer, consumer)
    return got, stopped[0]


@pytest.mark.parametrize("pe, groups, relu", [(1, 4, True), (2, 2, False), (4, 1, True),
                                              (3, 2, False)])
def test_steps_match_golden(pe, groups, relu):
    rng = np.random.default_rng(pe * 10 + groups)
    o, y_range = pe * groups, (0, 900)
    # The layer's output is -y: the requantizer sees -y (its interval negated).
    rq = random_requant(rng, o, (-y_range[1], -y_range[0]), relu=relu, negative=True)
    dut = TileRequant(rq, pe=pe, in_range=y_range, tile_shape=signed(12))
    tiles = rng.integers(y_range[0], y_range[1] + 1, size=(6, groups, pe, 4))
    tiles[0] = y_range[0]
    tiles[1] = y_range[1]
    got, stopped = run(dut, tiles, groups, rng, p_gap=0.3, p_stall=0.6)
    # golden.requant on -y with the channels g·pe + p: (T, O, 4)
    ys = -tiles.reshape(6, o, 4)
    want_values = golden.requant(rq, ys)
    want = [([int(want_values[t, g * pe + p, k]) for p in range(pe)], g)
            for t in range(6) for g in range(groups) for k in range(4)]
    assert got == want
    assert stopped > 0  # a slow consumer stopped the tile side
    assert dut.slots == requant_slots(rq)


def test_validation():
    rng = np.random.default_rng(0)
    rq = random_requant(rng, 4, (-100, 0))
    with pytest.raises(ValueError, match=r"^pe must divide the 4 channels, not 3$"):
        TileRequant(rq, pe=3, in_range=(0, 100), tile_shape=signed(9))
    with pytest.raises(ValueError, match=r"^in_range must not be empty, not \(5, 4\)$"):
        TileRequant(rq, pe=1, in_range=(5, 4), tile_shape=signed(9))
    with pytest.raises(ValueError, match=r"^slots must be an integer of at least"):
        TileRequant(rq, pe=1, in_range=(0, 100), tile_shape=signed(9), slots=0)
    with pytest.raises(TypeError, match=r"^requant must be an hwgen.ir.Requant, not int$"):
        TileRequant(3, pe=1, in_range=(0, 100), tile_shape=signed(9))
    with pytest.raises(TypeError):
        TileRequant(rq, 1, (0, 100), signed(9))  # keyword-only
