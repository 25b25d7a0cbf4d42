# amaranth: UnusedElaboratable=no
"""MaxPoolEngine in Amaranth's simulator, against hwgen.golden.maxpool.

Also holds the stream drivers the other hardware tests share (random valid gaps on the
source, random backpressure on the sink).
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from amaranth import signed, unsigned
from amaranth.sim import Simulator

from hwgen import golden, ir
from hwgen.hw.pool import MaxPoolEngine


# --------------------------------------------------------------------------- stream drivers

def pack(values, bits: int) -> int:
    """Little-endian concatenation of ``values``, ``bits`` each (two's complement)."""
    mask = (1 << bits) - 1
    return sum((int(v) & mask) << (i * bits) for i, v in enumerate(values))


def unpack(raw: int, bits: int, count: int, is_signed: bool) -> list[int]:
    out = []
    for i in range(count):
        v = (raw >> (i * bits)) & ((1 << bits) - 1)
        if is_signed and v >> (bits - 1):
            v -= 1 << bits
        out.append(v)
    return out


def add_source(sim, stream, beats, *, gaps=0.3, seed=1):
    """Drive ``beats`` (raw integers) into ``stream``, idling at random with probability ``gaps``."""
    rng = random.Random(seed)

    async def source(ctx):
        for beat in beats:
            while rng.random() < gaps:
                await ctx.tick()
            ctx.set(stream.payload.as_value(), beat)
            ctx.set(stream.valid, 1)
            await ctx.tick().until(stream.ready)
            ctx.set(stream.valid, 0)

    sim.add_testbench(source)


def add_sink(sim, stream, count, out: list, *, stalls=0.3, seed=2, times: list | None = None):
    """Collect ``count`` raw beats from ``stream`` into ``out``, refusing at random with probability ``stalls``."""
    rng = random.Random(seed)

    async def sink(ctx):
        cycle = 0
        while len(out) < count:
            ready = rng.random() >= stalls
            ctx.set(stream.ready, ready)
            _, _, payload, valid = await ctx.tick().sample(stream.payload.as_value(), stream.valid)
            cycle += 1
            if ready and valid:
                out.append(payload)
                if times is not None:
                    times.append(cycle)
        ctx.set(stream.ready, 0)

    sim.add_testbench(sink, background=False)


def run_sim(dut, *, deadline_cycles, setup):
    """Run the testbenches ``setup(sim)`` adds, failing if they need more than ``deadline_cycles``."""
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    setup(sim)
    sim.run_until(deadline_cycles * 1e-8)


# --------------------------------------------------------------------------- max pool

def check_stream(dut, x, want, in_shape, out_shape, *, deadline, gaps=0.3, stalls=0.3, seed=0):
    """Stream images ``x`` (N, C, H, W) into ``dut.i`` (values of ``in_shape``) with random gaps,
    take its output with random backpressure and compare it with ``want`` (N, C, OH, OW),
    values of ``out_shape``; fail after ``deadline`` cycles."""
    c = x.shape[1]
    ib, ob = in_shape.width, out_shape.width
    beats = [pack(x[n, :, r, col], ib) for n in range(x.shape[0]) for r in range(x.shape[2])
             for col in range(x.shape[3])]
    expected = [pack(want[n, :, r, col], ob) for n in range(want.shape[0])
                for r in range(want.shape[2]) for col in range(want.shape[3])]
    got = []

    def setup(sim):
        add_source(sim, dut.i, beats, gaps=gaps, seed=seed + 1)
        add_sink(sim, dut.o, len(expected), got, stalls=stalls, seed=seed + 2)

    run_sim(dut, deadline_cycles=deadline, setup=setup)
    assert len(got) == len(expected), f"{len(got)} of {len(expected)} pooled pixels came out"
    for k, (g, e) in enumerate(zip(got, expected)):
        assert g == e, (f"pooled pixel {k}: got {unpack(g, ob, c, out_shape.signed)}, "
                        f"want {unpack(e, ob, c, out_shape.signed)}")


def range_shape(lo, hi):
    width, is_signed = ir.bits_for(lo, hi)
    return signed(width) if is_signed else unsigned(width)


def pool_case(c, h, w, size, lo, hi, images, *, gaps=0.3, stalls=0.3, seed=0, lanes=None):
    rng = np.random.default_rng(seed)
    x = rng.integers(lo, hi + 1, size=(images, c, h, w))
    want = golden.maxpool(ir.MaxPool2d("p", size=size), x)
    shape = range_shape(lo, hi)
    dut = MaxPoolEngine(c, (h, w), size, shape, lanes=lanes)
    check_stream(dut, x, want, shape, shape, deadline=8 * images * h * w * dut.slices + 100, gaps=gaps,
                 stalls=stalls, seed=seed)
    return dut


@pytest.mark.parametrize("c,h,w,size,lo,hi", [
    (8, 8, 8, 2, 0, 255),        # (8,8,8) -> (8,4,4)
    (16, 4, 4, 2, 0, 255),       # (16,4,4) -> (16,2,2)
    (3, 5, 7, 2, -100, 27),      # odd: last row and column dropped, signed values
    (2, 7, 8, 3, -4, 3),         # size 3, floor mode on both axes
    (2, 3, 3, 2, 0, 7),          # one pooled column: a register, not a memory, holds the row
    (2, 9, 9, 4, -8, 7),         # size 4
    (2, 3, 3, 1, -8, 7),         # size 1: the identity
])
def test_maxpool_matches_golden(c, h, w, size, lo, hi):
    pool_case(c, h, w, size, lo, hi, images=3)


def test_maxpool_full_rate():
    """With no gaps and no backpressure the engine takes one pixel per cycle, back to back."""
    c, h, w = 4, 6, 6
    rng = np.random.default_rng(5)
    x = rng.integers(0, 16, size=(2, c, h, w))
    dut = MaxPoolEngine(c, (h, w), 2, unsigned(4))
    beats = [pack(x[n, :, r, col], 4) for n in range(2) for r in range(h) for col in range(w)]
    got, times = [], []

    def setup(sim):
        add_source(sim, dut.i, beats, gaps=0.0)
        add_sink(sim, dut.o, 18, got, stalls=0.0, times=times)

    run_sim(dut, deadline_cycles=200, setup=setup)
    assert len(got) == 18
    # Last pooled pixel of image 2 leaves one cycle after the last input pixel (cycle 72).
    assert times[-1] <= 2 * h * w + 1


def test_maxpool_rejects_bad_parameters():
    with pytest.raises(TypeError):
        MaxPoolEngine(0, (4, 4), 2, unsigned(8))
    with pytest.raises(ValueError):
        MaxPoolEngine(1, (1, 4), 2, unsigned(8))
    for lanes in (3, 0, 16, 2.0, True):
        with pytest.raises(ValueError, match=r"lanes=.* must divide the 8 channels; pick one of \[1, 2, 4, 8\]"):
            MaxPoolEngine(8, (4, 4), 2, unsigned(8), lanes=lanes)


# --------------------------------------------------------------------------- channel folding

@pytest.mark.parametrize("c,h,w,size,lo,hi,lanes", [
    (8, 8, 8, 2, 0, 255, 1),       # pool0 of the digits models, a channel per cycle
    (16, 4, 4, 2, 0, 255, 1),      # pool1
    (8, 8, 8, 2, 0, 255, 2),
    (16, 4, 4, 2, 0, 255, 4),
    (6, 5, 7, 2, -100, 27, 2),     # odd: last row and column dropped, signed, 3 slices (not a power of 2)
    (6, 7, 8, 3, -4, 3, 3),        # size 3, floor mode on both axes, 2 slices
    (3, 7, 7, 3, -4, 3, 1),        # size 3, 3 slices, a column dropped
    (2, 3, 3, 2, 0, 7, 1),         # one pooled column: the memory holds just the slices of one block
    (4, 3, 5, 2, -8, 7, 1),        # one pooled row, two columns, signed
    (4, 9, 9, 4, -8, 7, 2),        # size 4
    (4, 3, 3, 1, -8, 7, 1),        # size 1: the identity whatever the lanes
    (8, 2, 2, 2, -128, 127, 1),    # the whole map one block
])
def test_folded_maxpool_matches_golden(c, h, w, size, lo, hi, lanes):
    dut = pool_case(c, h, w, size, lo, hi, images=3, lanes=lanes, seed=c + h + w + lanes)
    assert dut.params["lanes"] == lanes
    assert dut.cycles_per_image == h * w * (c // lanes if size > 1 else 1)


@pytest.mark.parametrize("gaps,stalls", [(0.0, 0.8), (0.8, 0.0), (0.5, 0.5)])
def test_folded_maxpool_gaps_and_backpressure(gaps, stalls):
    """Long input gaps, heavy output backpressure: the slices must not lose their place."""
    pool_case(6, 6, 6, 2, -30, 30, images=2, lanes=2, gaps=gaps, stalls=stalls, seed=11)
    pool_case(4, 5, 5, 2, 0, 255, images=2, lanes=1, gaps=gaps, stalls=stalls, seed=12)


@pytest.mark.parametrize("lanes", [1, 2, 4])
def test_folded_maxpool_full_rate(lanes):
    """Fed without gaps and never stalled, the engine takes a slice per cycle: ``H*W*C/lanes``
    cycles per image, the pooled pixel one cycle after its block's last slice."""
    c, h, w, images = 4, 6, 6, 2
    rng = np.random.default_rng(lanes)
    x = rng.integers(0, 16, size=(images, c, h, w))
    want = golden.maxpool(ir.MaxPool2d("p", size=2), x)
    dut = MaxPoolEngine(c, (h, w), 2, unsigned(4), lanes=lanes)
    assert dut.cycles_per_image == h * w * c // lanes
    beats = [pack(x[n, :, r, col], 4) for n in range(images) for r in range(h) for col in range(w)]
    got, times = [], []

    def setup(sim):
        add_source(sim, dut.i, beats, gaps=0.0)
        add_sink(sim, dut.o, 18, got, stalls=0.0, times=times)

    run_sim(dut, deadline_cycles=images * dut.cycles_per_image + 50, setup=setup)
    assert got == [pack(want[n, :, r, col], 4) for n in range(images) for r in range(3) for col in range(3)]
    assert times[-1] <= images * dut.cycles_per_image + 1
    # Within an image, pooled pixels of a block row leave 2 pixels (2*slices cycles) apart.
    assert times[1] - times[0] == 2 * c // lanes


def test_folded_row_buffer_is_narrow():
    """The row buffer of a folded pool is one memory of lanes-wide words, in block RAM when it
    is large enough to be worth a block, else logic; lanes = C keeps the whole-pixel buffer."""
    def row_buffer(*args, **kwargs):
        dut = MaxPoolEngine(*args, **kwargs)
        dut._MustUse__silence = True  # inspected, not elaborated
        return dut.params["row_buffer"]

    assert row_buffer(16, (4, 4), 2, unsigned(8), lanes=1) == {"width": 8, "depth": 32, "style": "block"}
    assert row_buffer(8, (8, 8), 2, unsigned(8), lanes=1) == {"width": 8, "depth": 32, "style": "block"}
    assert row_buffer(4, (4, 4), 2, unsigned(8), lanes=2) == {"width": 16, "depth": 4, "style": "logic"}
    assert row_buffer(16, (4, 4), 2, unsigned(8)) == {"width": 128, "depth": 2, "style": "block"}
    assert row_buffer(16, (2, 2), 2, unsigned(8)) is None  # one block column: a register


# --------------------------------------------------------------------------- window pools

def window_pool_case(c, h, w, size, stride, padding, lo, hi, simd, *, images=3, seed=0, gaps=0.3,
                     stalls=0.3):
    """A max WindowPoolEngine against golden.maxpool of an ``ir.MaxPool2d`` of that geometry."""
    from hwgen.hw.pool import WindowPoolEngine

    rng = np.random.default_rng(seed)
    x = rng.integers(lo, hi + 1, size=(images, c, h, w))
    want = golden.maxpool(ir.MaxPool2d("p", size=size, stride=stride, padding=padding), x)
    shape = range_shape(lo, hi)
    dut = WindowPoolEngine(c, (h, w), size, stride, padding, shape, shape, "max", simd=simd)
    assert dut.out_hw == want.shape[2:]
    check_stream(dut, x, want, shape, shape, deadline=6 * images * dut.cycles_per_image + 200,
                 gaps=gaps, stalls=stalls, seed=seed)
    return dut


@pytest.mark.parametrize("c,h,w,size,stride,padding,lo,hi,simd", [
    (4, 8, 8, 3, 2, 1, 0, 255, 4),       # ResNet's stem pool: 3×3 stride 2 padding 1
    (3, 7, 9, 3, 2, 0, -100, 27, 3),     # 3×3 stride 2, odd sizes, signed: no zero may win
    (2, 6, 5, 2, 1, 0, -8, 7, 2),        # 2×2 stride 1 (overlapping)
    (2, 5, 6, 3, 1, 1, -8, 7, 6),        # 3×3 stride 1 padding 1, three pixels per beat
    (4, 6, 6, 3, 2, 1, -30, 30, 2),      # slices of a pixel (2 per pixel), signed padding
    (6, 5, 5, 2, 1, 1, 0, 15, 3),        # padding 1 with a 2×2 window, slices
    (2, 6, 6, 2, 2, 1, -4, 3, 2),        # stride = size but padded: not a MaxPoolEngine
])
def test_window_maxpool_matches_golden(c, h, w, size, stride, padding, lo, hi, simd):
    dut = window_pool_case(c, h, w, size, stride, padding, lo, hi, simd, seed=c * h + w + simd)
    assert dut.params["lanes"] == simd and dut.params["op"] == "max"


def test_window_pool_backpressure_and_full_rate():
    window_pool_case(4, 7, 7, 3, 2, 1, -30, 30, 2, gaps=0.0, stalls=0.8, seed=3)
    window_pool_case(4, 7, 7, 3, 2, 1, 0, 255, 4, gaps=0.8, stalls=0.0, seed=4)
    window_pool_case(2, 6, 6, 3, 2, 1, 0, 255, 6, gaps=0.0, stalls=0.0, seed=5)


def test_window_pool_rejects_bad_parameters():
    from hwgen.hw.pool import WindowPoolEngine

    with pytest.raises(ValueError, match=r"^lanes=5 does not fold a 4-channel 3×3 pool window; "
                                         r"pick one of \[1, 2, 4, 12\]$"):
        WindowPoolEngine(4, (8, 8), 3, 2, 1, unsigned(8), unsigned(8), "max", simd=5)
    with pytest.raises(ValueError, match=r"^op must be one of max, sum, not 'min'$"):
        WindowPoolEngine(4, (8, 8), 3, 2, 1, unsigned(8), unsigned(8), "min")
    with pytest.raises(ValueError, match="out_shape is its elem_shape"):
        WindowPoolEngine(4, (8, 8), 3, 2, 1, unsigned(8), unsigned(9), "max")


# --------------------------------------------------------------------------- sum pools

@pytest.mark.parametrize("c,h,w,size,stride,padding,lo,hi,simd", [
    (4, 8, 8, 2, 2, 0, 0, 255, 4),       # AvgPool2d(2)
    (3, 7, 6, 3, 2, 1, -100, 27, 3),     # 3×3 stride 2 padded, signed
    (4, 5, 5, 3, 1, 1, 0, 15, 2),        # overlapping, slices of a pixel
    (2, 6, 6, 2, 2, 0, -8, 7, 4),        # two pixels per beat, signed
])
def test_window_sumpool_matches_golden(c, h, w, size, stride, padding, lo, hi, simd):
    from hwgen.hw.pool import WindowPoolEngine

    layer = ir.SumPool2d("p", size=size, stride=stride, padding=padding)
    rng = np.random.default_rng(c + h + simd)
    x = rng.integers(lo, hi + 1, size=(3, c, h, w))
    x[0, :, :, :] = hi  # the largest sums
    shape, out = range_shape(lo, hi), range_shape(*layer.out_range(lo, hi))
    dut = WindowPoolEngine(c, (h, w), size, stride, padding, shape, out, "sum", simd=simd)
    check_stream(dut, x, golden.execute(layer, x), shape, out, deadline=6 * 3 * dut.cycles_per_image + 200,
                 seed=simd)


@pytest.mark.parametrize("c,h,w,lo,hi,stalls", [(4, 4, 4, 0, 255, 0.3), (3, 3, 5, -8, 7, 0.8),
                                                (2, 1, 1, 0, 15, 0.5)])
def test_global_sumpool_matches_golden(c, h, w, lo, hi, stalls):
    from hwgen.hw.pool import GlobalSumPoolEngine

    layer = ir.GlobalSumPool2d("g", height=h, width=w)
    rng = np.random.default_rng(h * w)
    x = rng.integers(lo, hi + 1, size=(4, c, h, w))
    x[1] = hi
    shape, out = range_shape(lo, hi), range_shape(*layer.out_range(lo, hi))
    dut = GlobalSumPoolEngine(c, (h, w), shape, out)
    assert dut.cycles_per_image == h * w
    check_stream(dut, x, golden.execute(layer, x), shape, out, deadline=20 * 4 * h * w + 100,
                 stalls=stalls, seed=c)
