# amaranth: UnusedElaboratable=no
"""The streaming conv engine (l1, shift and mac lanes) and the requantizer, in Amaranth's simulator,
against hwgen.golden."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.sim import Simulator

from hwgen import golden, ir
from hwgen.hw.conv import ConvEngine, choose_folding, conv_candidates
from hwgen.hw.requant import Requant



def planned(layer, requant, in_shape, in_range):
    """The folding the planner gives one engine alone: the fastest that fits the budget."""
    pe, simd = choose_folding(conv_candidates(layer, in_shape, in_range, requant))
    return {"pe": pe, "simd": simd}

def random_mult(rng, max_terms=3, allow_negative=True):
    """A multiplier with 1..max_terms canonical signed digits."""
    while True:
        n = int(rng.integers(1, max_terms + 1))
        powers = rng.choice(np.arange(0, 10), size=n, replace=False)
        signs = rng.choice([-1, 1], size=n)
        v = int(sum(int(s) << int(p) for s, p in zip(signs, powers)))
        if v != 0 and len(ir.csd(v)) <= max_terms and (allow_negative or v > 0):
            return v


def random_requant(rng, channels, acc_range, relu=True, out_bits=4, negative=False, samples=None):
    """A requantizer whose output spans the clamp range, reaching both ends, for accumulators in
    ``acc_range`` or, better, calibrated on ``samples`` (N, channels, ...) as a quantizer would."""
    mult = np.array([random_mult(rng, allow_negative=negative) for _ in range(channels)])
    if samples is not None:
        axes = (0,) + tuple(range(2, samples.ndim))
        lo, hi = samples.min(axis=axes), samples.max(axis=axes)
    else:
        lo, hi = np.full(channels, acc_range[0]), np.full(channels, acc_range[1])
    p_lo = np.minimum(mult * lo, mult * hi)
    p_span = np.maximum(mult * lo, mult * hi) - p_lo
    # Centred on the clamp range, the widest channel spans 1 to 2 times it: it clamps both sides.
    shift = max(0, int(p_span.max()).bit_length() - out_bits)
    centre = (1 << (out_bits - 1)) if relu else 0
    bias = (centre << shift) - p_lo - p_span // 2
    bias += rng.integers(0, 1 << shift, size=channels) if shift else 0
    return ir.Requant("rq", mult=mult, bias=bias.astype(np.int64), shift=shift, out_bits=out_bits, relu=relu)


def random_layer(rng, c, o, k, pad, w_lim):
    weight = rng.integers(-w_lim, w_lim + 1, size=(o, c, k, k))
    weight.flat[0] = -w_lim  # the most negative weight appears
    return ir.AdderConv2d("conv", weight=weight, stride=1, padding=pad)


def simulate(engine: ConvEngine, images: np.ndarray, rng, p_gap=0.3, p_stall=0.3, max_cycles=200_000):
    """Stream ``images`` (N, C, H, W) in with random gaps and take the output with random
    backpressure; returns the output beats as an (beats, O) array and the cycle count."""
    c, h, w = engine.in_shape
    oh, ow = engine.out_hw
    o = engine.weight.shape[0]
    expected_beats = images.shape[0] * oh * ow
    pixels = [[int(v) for v in images[n, :, y, x]] for n in range(images.shape[0])
              for y in range(h) for x in range(w)]
    gaps = rng.random(10 * len(pixels) + 10) < p_gap
    stalls = rng.random(max_cycles) < p_stall
    out = []
    done = []

    async def producer(ctx):
        for i, px in enumerate(pixels):
            if gaps[i]:
                await ctx.tick().repeat(int(rng.integers(1, 4)))
            ctx.set(engine.i.payload, px)
            ctx.set(engine.i.valid, 1)
            await ctx.tick().until(engine.i.ready)
            ctx.set(engine.i.valid, 0)

    async def consumer(ctx):
        cycle = 0
        while len(out) < expected_beats:
            ctx.set(engine.o.ready, int(not stalls[cycle]))
            _, _, valid, ready, payload = await ctx.tick().sample(engine.o.valid, engine.o.ready, engine.o.payload)
            if valid and ready:
                out.append([int(payload[j]) for j in range(o)])
            cycle += 1
            assert cycle < max_cycles, f"timeout: {len(out)} of {expected_beats} beats"
        done.append(cycle)
        # No extra beat may follow.
        ctx.set(engine.o.ready, 1)
        for _ in range(engine.latency + 5):
            _, _, valid = await ctx.tick().sample(engine.o.valid)
            assert not valid, "the engine sent more beats than output pixels"

    sim = Simulator(engine)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    return np.array(out, dtype=np.int64), done[0]


def expected_conv(layer, requant, images):
    y = golden.execute(requant, golden.execute(layer, images))  # (N, O, OH, OW)
    return y.transpose(0, 2, 3, 1).reshape(-1, y.shape[1])


CASES = [
    # (C, H, W, O, pad, in_bits, w_lim, pe, simd)
    (1, 8, 8, 8, 1, 8, 128, None, None),    # first digits layer (the planner's folding)
    (8, 4, 4, 16, 1, 4, 8, None, None),     # second digits layer (the planner's folding)
    (3, 5, 7, 4, 1, 4, 9, 2, 3),            # non-square, odd channels, one read port
    (3, 5, 7, 4, 1, 4, 9, 1, 9),            # three read ports (whole pixels per beat)
    (2, 6, 5, 6, 1, 3, 5, 3, 1),            # slices of one pixel, simd 1
    (4, 4, 4, 4, 0, 4, 7, 4, 2),            # no padding, pe covers all channels
    (1, 5, 6, 4, 1, 4, 9, 2, 9),            # one beat per pass (steps 1), input-bound
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}x{c[1]}x{c[2]}-o{c[3]}-pe{c[7]}-simd{c[8]}" for c in CASES])
def test_conv_engine_matches_golden(case):
    c, h, w, o, pad, in_bits, w_lim, pe, simd = case
    rng = np.random.default_rng(hash(case) & 0xFFFF)
    layer = random_layer(rng, c, o, 3, pad, min(w_lim, (1 << in_bits)))
    if w_lim == 128:
        layer.weight.flat[0] = -128
    in_range = (0, (1 << in_bits) - 1)
    acc = layer.out_range(*in_range)
    relu = bool(rng.integers(0, 2)) if c != 1 else True
    images = rng.integers(0, 1 << in_bits, size=(3, c, h, w))
    images[0, :, 0, :] = (1 << in_bits) - 1  # max input
    images[1, :, :, 0] = 0
    requant = random_requant(rng, o, acc, relu=relu, negative=not relu, samples=golden.execute(layer, images))
    fold = planned(layer, requant, (c, h, w), in_range) if pe is None else {"pe": pe, "simd": simd}
    engine = ConvEngine(layer, requant, (c, h, w), in_range, **fold)
    # A fast engine waits for its input: the row-availability logic is on the critical path.
    p_gap = 0.6 if engine.steps * engine.groups <= 2 else 0.3
    got, _ = simulate(engine, images, rng, p_gap=p_gap)
    want = expected_conv(layer, requant, images)
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    assert len(np.unique(want)) > 5  # the test data exercises the requantizer


def test_dense_engine_matches_golden():
    rng = np.random.default_rng(7)
    c, h, w, o = 16, 2, 2, 10
    weight = rng.integers(-8, 8, size=(o, c * h * w))
    layer = ir.AdderDense("fc", weight=weight)
    in_range = (0, 15)
    images = rng.integers(0, 16, size=(3, c, h, w))
    flat = golden.execute(ir.Flatten("flat"), images)
    requant = random_requant(rng, o, layer.out_range(*in_range), relu=False, out_bits=8, negative=True,
                             samples=golden.execute(layer, flat))
    engine = ConvEngine(layer, requant, (c, h, w), in_range, **planned(layer, requant, (c, h, w), in_range))
    got, _ = simulate(engine, images, rng)
    want = golden.execute(requant, golden.execute(layer, flat))
    np.testing.assert_array_equal(got, want)
    assert len(np.unique(want)) > 5


def test_back_to_back_without_gaps():
    """Input always valid, output always ready: the tightest overlap of images."""
    rng = np.random.default_rng(3)
    layer = random_layer(rng, 2, 4, 3, 1, 7)
    requant = random_requant(rng, 4, layer.out_range(0, 15))
    engine = ConvEngine(layer, requant, (2, 5, 4), (0, 15), pe=2, simd=2)
    images = rng.integers(0, 16, size=(4, 2, 5, 4))
    got, cycles = simulate(engine, images, rng, p_gap=0.0, p_stall=0.0)
    np.testing.assert_array_equal(got, expected_conv(layer, requant, images))
    # Compute never waits once the first rows are in: the schedule's count is the throughput.
    fill = (3 - 1) * 4 + 2  # rows needed by output row 0, plus the write-to-read cycles
    assert cycles <= len(images) * engine.cycles_per_image + fill + engine.latency, cycles


def test_digits_folding_and_verilog():
    rng = np.random.default_rng(1)
    shapes = [((1, 8, 8), 8, (0, 255)), ((8, 4, 4), 16, (0, 15))]
    for (c, h, w), o, in_range in shapes:
        layer = random_layer(rng, c, o, 3, 1, 7)
        requant = random_requant(rng, o, layer.out_range(*in_range))
        engine = ConvEngine(layer, requant, (c, h, w), in_range, **planned(layer, requant, (c, h, w), in_range))
        assert engine.cycles_per_image == h * w * (o // engine.pe) * (c * 9 // engine.simd)
        text = verilog.convert(engine, name="conv")
        assert "module conv" in text
    dense = ir.AdderDense("fc", weight=rng.integers(-8, 8, size=(10, 64)))
    requant = random_requant(rng, 10, dense.out_range(0, 15), relu=False, out_bits=8, negative=True)
    engine = ConvEngine(dense, requant, (16, 2, 2), (0, 15), pe=2, simd=16)
    assert engine.out_hw == (1, 1)
    assert "module conv" in verilog.convert(engine, name="conv")


def test_validation():
    rng = np.random.default_rng(0)
    requant = random_requant(rng, 4, (-100, 0))
    layer = ir.AdderConv2d("c", weight=np.zeros((4, 2, 3, 3), dtype=np.int64), stride=1, padding=1)
    with pytest.raises(ValueError, match="pe=3"):
        ConvEngine(layer, requant, (2, 6, 6), (0, 15), pe=3, simd=1)
    with pytest.raises(ValueError, match="simd=4"):
        ConvEngine(layer, requant, (2, 6, 6), (0, 15), pe=1, simd=4)
    with pytest.raises(TypeError, match="adder_conv2d, shift_conv2d, conv2d"):
        ConvEngine(ir.MaxPool2d("m"), requant, (2, 6, 6), (0, 15), pe=1, simd=1)
    with pytest.raises(ValueError, match="weights='ram'"):
        ConvEngine(layer, requant, (2, 6, 6), (0, 15), pe=1, simd=1, weights="ram")


STRIDE_CASES = [
    # (kind, C, H, W, O, K, pad, stride, pe, simd)
    ("adder", 1, 8, 8, 8, 3, 1, 2, None, None),   # the digits' first layer at stride 2
    ("adder", 2, 9, 7, 4, 5, 2, 2, 2, 2),         # kernel 5, padding 2, odd sizes
    ("shift", 3, 8, 9, 4, 3, 0, 2, 4, 9),         # no padding, three read ports
    ("mac", 4, 7, 6, 6, 1, 0, 2, 3, 2),           # kernel 1 (skips rows), slices of a pixel
    ("adder", 2, 6, 6, 4, 3, 1, 3, 4, 18),        # stride 3, whole window per beat
]


@pytest.mark.parametrize("case", STRIDE_CASES,
                         ids=["{}-{}x{}x{}-o{}-k{}-p{}-s{}".format(*c[:8]) for c in STRIDE_CASES])
def test_strided_engines_match_golden(case):
    kind, c, h, w, o, k, pad, stride, pe, simd = case
    rng = np.random.default_rng(STRIDE_CASES.index(case) + 300)
    if kind == "adder":
        layer = random_layer(rng, c, o, k, pad, 8)
    else:
        layer = shift_or_mac_layer(rng, "shift" if kind == "shift" else "mac", c, o, k, pad)
    layer.stride = stride
    in_range = (0, 15)
    images = rng.integers(0, 16, size=(3, c, h, w))
    images[0, :, 0, :] = 15
    requant = random_requant(rng, o, layer.out_range(*in_range), relu=True, negative=kind == "adder",
                             samples=golden.execute(layer, images))
    fold = planned(layer, requant, (c, h, w), in_range) if pe is None else {"pe": pe, "simd": simd}
    engine = ConvEngine(layer, requant, (c, h, w), in_range, **fold)
    assert engine.out_hw == layer.out_shape((c, h, w))[1:] and engine.params["stride"] == stride
    # Fewer output pixels than input pixels: the input can be the bound.
    assert engine.cycles_per_image >= h * w * max(1, c // engine.simd)
    got, _ = simulate(engine, images, rng)
    want = expected_conv(layer, requant, images)
    np.testing.assert_array_equal(got, want)
    assert len(np.unique(want)) > 3


# --------------------------------------------------------------------------- shift and mac layers

def shift_or_mac_layer(rng, kind, c, o, k, pad):
    if kind == "shift":
        sign = rng.integers(-1, 2, size=(o, c, k, k))
        shift = rng.integers(0, 8, size=(o, c, k, k))
        sign.flat[0], shift.flat[0] = -1, 7  # the most negative weight appears
        return ir.ShiftConv2d("conv", sign=sign, shift=shift, padding=pad, max_shift=7)
    weight = rng.integers(-128, 128, size=(o, c, k, k))
    weight.flat[0] = -128
    return ir.Conv2d("conv", weight=weight, padding=pad)


MAC_CASES = [
    # (kind, C, H, W, O, pad, in_range, pe, simd)
    ("shift", 1, 8, 8, 8, 1, (0, 255), None, None),     # first digits layer, the planner's folding
    ("shift", 3, 5, 6, 4, 1, (-128, 127), 2, 3),        # signed input (requant without ReLU)
    ("shift", 2, 4, 4, 6, 0, (-8, 7), 3, 6),            # no padding, two read ports
    ("shift", 4, 4, 5, 4, 1, (0, 15), 1, 2),            # slices of a pixel
    ("mac", 1, 6, 6, 4, 1, (0, 255), None, None),
    ("mac", 3, 5, 6, 4, 1, (-128, 127), 4, 9),          # three read ports, signed input
    ("mac", 2, 4, 5, 6, 1, (0, 15), 2, 1),
]


@pytest.mark.parametrize("case", MAC_CASES, ids=[f"{c[0]}-{c[1]}x{c[2]}x{c[3]}-o{c[4]}-pe{c[7]}-simd{c[8]}"
                                                 for c in MAC_CASES])
def test_shift_and_mac_engines_match_golden(case):
    kind, c, h, w, o, pad, in_range, pe, simd = case
    rng = np.random.default_rng(MAC_CASES.index(case) + 100)
    layer = shift_or_mac_layer(rng, kind, c, o, 3, pad)
    lo, hi = in_range
    images = rng.integers(lo, hi + 1, size=(3, c, h, w))
    images[0, :, 0, :] = lo   # the most negative input, next to the padding
    images[1, :, :, 0] = hi
    relu = bool(rng.integers(0, 2))
    requant = random_requant(rng, o, layer.out_range(*in_range), relu=relu, negative=True,
                             samples=golden.execute(layer, images))
    fold = planned(layer, requant, (c, h, w), in_range) if pe is None else {"pe": pe, "simd": simd}
    engine = ConvEngine(layer, requant, (c, h, w), in_range, **fold)
    assert engine.params["lane"] == kind
    got, _ = simulate(engine, images, rng)
    want = expected_conv(layer, requant, images)
    np.testing.assert_array_equal(got, want)
    assert len(np.unique(want)) > 5


@pytest.mark.parametrize("kind", ["shift", "mac"])
def test_shift_and_mac_dense_engines_match_golden(kind):
    rng = np.random.default_rng(17)
    c, h, w, o = 8, 2, 2, 10
    if kind == "shift":
        layer = ir.ShiftDense("fc", sign=rng.integers(-1, 2, size=(o, c * h * w)),
                              shift=rng.integers(0, 8, size=(o, c * h * w)), max_shift=7)
    else:
        layer = ir.Dense("fc", weight=rng.integers(-128, 128, size=(o, c * h * w)))
    in_range = (-128, 127)
    images = rng.integers(-128, 128, size=(3, c, h, w))
    flat = golden.execute(ir.Flatten("flat"), images)
    requant = random_requant(rng, o, layer.out_range(*in_range), relu=False, out_bits=8, negative=True,
                             samples=golden.execute(layer, flat))
    engine = ConvEngine(layer, requant, (c, h, w), in_range, **planned(layer, requant, (c, h, w), in_range))
    got, _ = simulate(engine, images, rng)
    np.testing.assert_array_equal(got, golden.execute(requant, golden.execute(layer, flat)))


# --------------------------------------------------------------------------- requantizer

def run_requant(unit: Requant, sels, xs, rng):
    """Offer the values with random gaps and stalls (``en`` low: nothing may move); a value is
    taken in an enabled cycle with ``ready`` high. Returns the results and their ``y_sel``."""
    out, out_sel = [], []

    async def tb(ctx):
        k = 0
        for _ in range(len(xs) * (unit.slots + 2) * 3 + 20):
            en = int(rng.random() > 0.2)
            ctx.set(unit.en, en)
            if k < len(xs) and rng.random() < 0.8:
                ctx.set(unit.valid, 1)
                ctx.set(unit.sel, int(sels[k]))
                ctx.set(unit.x, int(xs[k]))
            else:
                ctx.set(unit.valid, 0)
                ctx.set(unit.x, int(xs[int(rng.integers(0, len(xs)))]))  # garbage while not valid
            _, _, valid, ready, y_valid, y, y_sel = await ctx.tick().sample(
                unit.valid, unit.ready, unit.y_valid, unit.y, unit.y_sel)
            if en and valid and ready:
                k += 1
            if en and y_valid:
                out.append(int(y))
                out_sel.append(int(y_sel))
        assert k == len(xs)

    sim = Simulator(unit)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return np.array(out, dtype=np.int64), np.array(out_sel, dtype=np.int64)


@pytest.mark.parametrize("relu,negate,terms", [(True, True, 1), (True, True, 3), (False, True, 2),
                                               (False, False, 3), (True, False, 2)])
def test_requant_matches_golden(relu, negate, terms):
    rng = np.random.default_rng(terms * 4 + 2 * relu + negate)
    channels = 5
    mult = np.array([random_mult(rng, terms) for _ in range(channels)])
    mult[0] = -(1 << 9) + 1 if terms >= 2 else -(1 << 9)  # a negative, large multiplier
    in_range = (0, 3000) if negate else (-1500, 1500)
    acc_lo, acc_hi = (-in_range[1], -in_range[0]) if negate else in_range
    shift = 12
    bias = rng.integers(-(1 << 18), 1 << 18, size=channels)
    rq = ir.Requant("rq", mult=mult, bias=bias, shift=shift, out_bits=6, relu=relu, max_terms=terms)
    for chans in ([0, 1, 2, 3, 4], [3]):
        unit = Requant(rq, chans, in_range, negate=negate)
        n = 300
        sels = rng.integers(0, len(chans), size=n)
        xs = rng.integers(in_range[0], in_range[1] + 1, size=n)
        xs[:4] = [in_range[0], in_range[1], 0, in_range[1] - 1]
        got, got_sel = run_requant(unit, sels, xs, rng)
        np.testing.assert_array_equal(got_sel, sels)
        assert unit.latency == unit.slots <= terms
        acc = -xs if negate else xs
        want = np.array([golden.requant(rq, np.eye(channels, dtype=np.int64)[None, chans[s]] * a)[0, chans[s]]
                         for s, a in zip(sels, acc)])
        np.testing.assert_array_equal(got, want)
        if len(chans) > 1:  # the data reaches the clamp and the inside of the range
            assert (want.min() == rq.clamp[0] or want.max() == rq.clamp[1]) and len(np.unique(want)) > 3
