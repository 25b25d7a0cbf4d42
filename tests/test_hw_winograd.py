# amaranth: UnusedElaboratable=no
"""The Winograd-AdderNet tile engine in Amaranth's simulator, against hwgen.golden."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.back import verilog

from hwgen import golden, ir
from hwgen.hw.conv import choose_folding
from hwgen.hw.winograd import WinogradEngine, winograd_candidates
from hwgen.nn.winograd import transform_set

from test_hw_conv import expected_conv, random_requant, simulate


def winograd_layer(rng, c, o, pad, transform="standard", u_lim=600):
    t = transform_set(transform)
    u = rng.integers(-u_lim, u_lim + 1, size=(o, c, 4, 4))
    return ir.WinogradAdderConv2d(name="conv", u=u, bt=t["bt"].numpy().astype(np.int64),
                                  at=t["at"].numpy().astype(np.int64), padding=pad)


CASES = [
    # (C, H, W, O, pad, in_bits, pe, transform, overlap)
    (1, 8, 8, 8, 1, 8, 1, "standard", True),     # first digits layer
    (8, 4, 4, 16, 1, 8, 2, "standard", True),    # second digits layer
    (8, 4, 4, 16, 1, 8, 1, "standard", False),   # ... without the second tile buffer
    (2, 7, 5, 4, 1, 4, 2, "balanced", True),     # odd output sizes: tiles completed and cropped
    (2, 7, 5, 4, 1, 4, 1, "balanced", False),
    (3, 6, 6, 4, 0, 4, 4, "standard", True),     # no padding, one group
    (1, 3, 3, 2, 1, 4, 1, "balanced", True),     # an image smaller than the line buffer
    (2, 5, 9, 6, 0, 3, 3, "standard", False),    # no padding, odd size, pe 3
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}x{c[1]}x{c[2]}-o{c[3]}-pad{c[4]}-pe{c[6]}-{c[7]}-ov{int(c[8])}"
                                             for c in CASES])
def test_winograd_engine_matches_golden(case):
    c, h, w, o, pad, in_bits, pe, transform, overlap = case
    rng = np.random.default_rng(sum(map(hash, map(str, case))) & 0xFFFF)
    layer = winograd_layer(rng, c, o, pad, transform, u_lim=4 << in_bits)
    in_range = (0, (1 << in_bits) - 1)
    images = rng.integers(0, 1 << in_bits, size=(3, c, h, w))
    images[0, :, 0, :] = (1 << in_bits) - 1
    images[1, :, :, 0] = 0
    samples = golden.execute(layer, images)
    requant = random_requant(rng, o, layer.out_range(*in_range), relu=bool(c % 2), negative=True,
                             samples=samples)
    engine = WinogradEngine(layer, requant, (c, h, w), in_range, pe=pe, overlap=overlap)
    got, cycles = simulate(engine, images, rng, p_gap=0.2, p_stall=0.3)
    want = expected_conv(layer, requant, images)
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    assert len(np.unique(want)) > 3


@pytest.mark.parametrize("overlap", [True, False])
def test_throughput_without_stalls(overlap):
    """Fed and drained without gaps, the engine runs at its stated cycles per image."""
    rng = np.random.default_rng(3)
    layer = winograd_layer(rng, 4, 4, 1)
    images = rng.integers(0, 256, size=(4, 4, 8, 8))
    requant = random_requant(rng, 4, layer.out_range(0, 255), samples=golden.execute(layer, images))
    engine = WinogradEngine(layer, requant, (4, 8, 8), (0, 255), pe=2, overlap=overlap)
    got, cycles = simulate(engine, images, rng, p_gap=0.0, p_stall=0.0)
    np.testing.assert_array_equal(got, expected_conv(layer, requant, images))
    per_image = engine.cycles_per_image
    assert 4 * per_image <= cycles <= 4 * per_image + engine.latency + 2 * per_image // 4 + 20, (cycles, per_image)


def test_validation_and_verilog():
    rng = np.random.default_rng(1)
    layer = winograd_layer(rng, 2, 4, 1)
    rq = random_requant(rng, 4, layer.out_range(0, 255))
    with pytest.raises(ValueError, match="pe=3 must divide the 4 output channels"):
        WinogradEngine(layer, rq, (2, 6, 6), (0, 255), pe=3, overlap=True)
    with pytest.raises(ir.ModelError, match="u has 2 input channels, input has 3"):
        WinogradEngine(layer, rq, (3, 6, 6), (0, 255), pe=1, overlap=True)
    with pytest.raises(TypeError, match="computes winograd_adder_conv2d layers"):
        WinogradEngine(ir.AdderConv2d("a", weight=np.zeros((4, 2, 3, 3), int), padding=1), rq, (2, 6, 6), (0, 255), pe=1, overlap=True)
    pe, overlap = choose_folding(winograd_candidates(layer, (2, 6, 6), (0, 255), rq))
    engine = WinogradEngine(layer, rq, (2, 6, 6), (0, 255), pe=pe, overlap=bool(overlap))
    text = verilog.convert(engine, name="wino")
    # Multiplication-free: the transforms are adders and one-bit shifts (the only product is the
    # input writer's channel counter times the word width, a constant shift of a counter).
    assert "module wino" in text
    assert [line for line in text.splitlines() if " * " in line and "wr_ch *" not in line] == []


def test_slow_consumer_fills_both_output_banks():
    """A consumer that is rarely ready backs the results up into both output banks and then
    into the requantizers and the lanes: nothing may be lost or overwritten."""
    rng = np.random.default_rng(7)
    layer = winograd_layer(rng, 1, 2, 1)
    images = rng.integers(0, 256, size=(3, 1, 6, 6))
    requant = random_requant(rng, 2, layer.out_range(0, 255), samples=golden.execute(layer, images))
    engine = WinogradEngine(layer, requant, (1, 6, 6), (0, 255), pe=2, overlap=True)
    got, _ = simulate(engine, images, rng, p_gap=0.0, p_stall=0.9)
    np.testing.assert_array_equal(got, expected_conv(layer, requant, images))
