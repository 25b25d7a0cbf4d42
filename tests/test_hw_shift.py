# amaranth: UnusedElaboratable=no
"""The barrel-shifter and MAC PEs, and engines with ROM or constant weights, in Amaranth's
simulator, against hwgen.golden (shift_matrix, mac_matrix, the layer executors)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from amaranth import signed, unsigned
from amaranth.hdl import Fragment

from hwgen import golden, ir
from hwgen.hw.conv import ConvEngine, acc_range, estimate_luts
from hwgen.hw.pe import PE, Lane

from test_hw_conv import expected_conv, random_requant, simulate
from test_hw_pe import run_pe

MAX_SHIFT = 7
X_RANGE = (-128, 127)  # a signed 8-bit activation (a requant without ReLU)


def shift_pe(simd, x_range=X_RANGE, max_shift=MAX_SHIFT, sign=None, shift=None):
    """A shift PE over the whole weight range ``±2**max_shift``; its accumulator is sized by
    the subset-sum bound of ``sign << shift`` (rows = outputs) when given, else by the widest
    possible one for ``K`` taps."""
    lane = Lane("shift", x_range, max_shift=max_shift)
    weight = sign << shift
    return PE(lane, simd, acc_range("shift", weight, lane.x_range))


def run_shift(simd, steps, xs, sign, shift, x_range=X_RANGE):
    pe = shift_pe(simd, x_range, sign=sign, shift=shift)
    ws = np.stack([sign, shift], axis=-1)  # (n, K, 2): what Lane.encode takes
    got = run_pe(pe, xs, ws, steps, np.random.default_rng(simd * 31 + steps))
    want = np.array([golden.shift_matrix(xs[i], sign[i:i + 1], shift[i:i + 1])[0] for i in range(len(xs))])
    np.testing.assert_array_equal(got, want)
    return pe, want


def test_shift_pe_every_exponent_and_sign_simd1():
    """Every (sign, exponent) against every edge of a signed input range, one tap per value."""
    lo, hi = X_RANGE
    edges = [lo, lo + 1, -1, 0, 1, hi - 1, hi]
    rows = list(itertools.product([-1, 0, 1], range(MAX_SHIFT + 1), edges))
    sign = np.array([[s] for s, _, _ in rows])
    shift = np.array([[p] for _, p, _ in rows])
    xs = np.array([[x] for _, _, x in rows])
    pe, want = run_shift(1, 1, xs, sign, shift)
    # The extremes really occur: -128 << 7 negated, and -128 << 7 itself.
    assert want.max() == -lo << MAX_SHIFT and want.min() == lo << MAX_SHIFT
    assert pe.lane.term_range == (lo << MAX_SHIFT, -lo << MAX_SHIFT)
    assert pe.lane.term_shape == signed(16)
    assert pe.lane.stages == 3 and pe.lane.w_width == 3 + 2


def test_shift_pe_every_exponent_and_sign_multistep():
    """simd 4, three beats per value: each (sign, exponent) on every lane at the extremes of x,
    so the tree and the accumulator reach both ends of their range; then random values."""
    simd, steps = 4, 3
    k = simd * steps
    lo, hi = X_RANGE
    rng = np.random.default_rng(5)
    signs, shifts, xs = [], [], []
    for s, p in itertools.product([-1, 0, 1], range(MAX_SHIFT + 1)):
        for x in (lo, hi, 0):
            signs.append(np.full(k, s))
            shifts.append(np.full(k, p))
            xs.append(np.full(k, x))
        # Mixed signs and exponents on one value, the edges of x on alternate taps.
        signs.append(np.resize([s, -s, 1], k))
        shifts.append(np.resize([p, MAX_SHIFT - p, 0], k))
        xs.append(np.resize([lo, hi, lo, 0], k))
    n = 30
    signs += list(rng.integers(-1, 2, size=(n, k)))
    shifts += list(rng.integers(0, MAX_SHIFT + 1, size=(n, k)))
    xs += list(rng.integers(lo, hi + 1, size=(n, k)))
    sign, shift, xs = np.array(signs), np.array(shifts), np.array(xs)
    pe, want = run_shift(simd, steps, xs, sign, shift)
    assert want.max() == k * (-lo << MAX_SHIFT) and want.min() == k * (lo << MAX_SHIFT)
    assert pe.acc_range == (k * (lo << MAX_SHIFT), k * (-lo << MAX_SHIFT))
    assert pe.latency == 2 + 2


def test_shift_pe_unsigned_input_and_narrow_exponents():
    """Unsigned input (after ReLU), max_shift 5 (a code that does not fill its 3 bits)."""
    x_range = (0, 255)
    rows = list(itertools.product([-1, 0, 1], range(6), [0, 1, 254, 255]))
    sign = np.array([[s, -s] for s, _, _ in rows])
    shift = np.array([[p, 5 - p] for _, p, _ in rows])
    xs = np.array([[x, 255 - x] for _, _, x in rows])
    lane = Lane("shift", x_range, max_shift=5)
    pe = PE(lane, 2, acc_range("shift", sign << shift, x_range))
    got = run_pe(pe, xs, np.stack([sign, shift], axis=-1), 1, np.random.default_rng(0))
    want = np.array([golden.shift_matrix(xs[i], sign[i:i + 1], shift[i:i + 1])[0] for i in range(len(xs))])
    np.testing.assert_array_equal(got, want)
    assert lane.x_shape == unsigned(8) and lane.stages == 3


@pytest.mark.parametrize("simd,steps,x_range,w_range", [
    (1, 1, (-128, 127), (-128, 127)),
    (3, 4, (-128, 127), (-128, 127)),
    (2, 3, (0, 255), (-128, 127)),
    (4, 2, (-8, 7), (0, 15)),            # signed x, unsigned weights
])
def test_mac_pe_matches_golden(simd, steps, x_range, w_range):
    rng = np.random.default_rng(simd * 10 + steps)
    k = simd * steps
    (xlo, xhi), (wlo, whi) = x_range, w_range
    xs, ws = [], []
    for x, w in itertools.product([xlo, xhi, 0, xlo + 1], [wlo, whi, 0]):  # every corner of the box
        xs.append(np.full(k, x))
        ws.append(np.full(k, w))
    n = 40
    xs += list(rng.integers(xlo, xhi + 1, size=(n, k)))
    ws += list(rng.integers(wlo, whi + 1, size=(n, k)))
    xs, ws = np.array(xs), np.array(ws)
    lane = Lane("mac", x_range, w_range)
    pe = PE(lane, simd, acc_range("mac", ws, x_range))
    got = run_pe(pe, xs, ws, steps, rng)
    want = np.array([golden.mac_matrix(xs[i], ws[i:i + 1])[0] for i in range(len(xs))])
    np.testing.assert_array_equal(got, want)
    corners = [x * w for x in x_range for w in w_range]
    assert lane.term_range == (min(corners), max(corners))
    assert want.max() == k * max(corners) and want.min() == k * min(corners)


def test_lane_validation():
    with pytest.raises(ValueError, match="max_shift"):
        Lane("shift", (0, 255))
    with pytest.raises(ValueError, match="lane op"):
        Lane("xor", (0, 1), (0, 1))
    with pytest.raises(ValueError, match="exceeds"):
        Lane("shift", (0, 255), (-256, 0), max_shift=7)
    lane = Lane("shift", (0, 255), max_shift=7)
    with pytest.raises(ValueError, match="shift in"):
        lane.encode((1, 8))
    assert lane.encode((0, 8)) == 0  # a zero weight's shift does not matter
    assert lane.encode((-1, 7)) == 7 | 3 << 3 and lane.encode((1, 0)) == 1 << 3
    with pytest.raises(ValueError, match="acc_range"):
        PE(lane, 2, (1, 5))


# --------------------------------------------------------------------------- engines: rom and const

def random_shift_conv(rng, c, o, k, pad, max_shift=MAX_SHIFT):
    sign = rng.integers(-1, 2, size=(o, c, k, k))
    shift = rng.integers(0, max_shift + 1, size=(o, c, k, k))
    sign.flat[0], shift.flat[0] = -1, max_shift  # the most negative weight appears
    return ir.ShiftConv2d("conv", sign=sign, shift=shift, padding=pad, max_shift=max_shift)


def engine_case(layer, in_range, images, rng, **kw):
    c = images.shape[1]
    o = layer.weight.shape[0]
    acc = golden.execute(layer, images)
    relu = bool(rng.integers(0, 2))
    requant = random_requant(rng, o, layer.out_range(*in_range), relu=relu, negative=True, samples=acc)
    engine = ConvEngine(layer, requant, images.shape[1:], in_range, **kw)
    got, _ = simulate(engine, images, rng)
    want = expected_conv(layer, requant, images)
    np.testing.assert_array_equal(got, want)
    assert len(np.unique(want)) > 3
    return engine


WEIGHT_CASES = [
    # (kind, in_range, pe, simd)
    ("shift", (-128, 127), 2, 2),     # signed input: several groups and steps
    ("shift", (0, 255), 4, 18),       # full parallelism: one group, one step, no mux at all
    ("shift", (-8, 7), 1, 6),
    ("mac", (-128, 127), 2, 6),
    ("mac", (0, 15), 4, 18),
    ("l1", (0, 15), 2, 1),
    ("l1", (-8, 7), 4, 18),
]


@pytest.mark.parametrize("weights", ["rom", "const"])
@pytest.mark.parametrize("case", WEIGHT_CASES, ids=[f"{k}-{lo}..{hi}-pe{p}-simd{s}" for k, (lo, hi), p, s in WEIGHT_CASES])
def test_engine_weights_rom_and_const_match_golden(case, weights):
    kind, in_range, pe, simd = case
    rng = np.random.default_rng(WEIGHT_CASES.index(case) * 2 + (weights == "const"))
    c, h, w, o = 2, 4, 5, 4
    if kind == "shift":
        layer = random_shift_conv(rng, c, o, 3, 1)
    elif kind == "mac":
        layer = ir.Conv2d("conv", weight=rng.integers(-128, 128, size=(o, c, 3, 3)), padding=1)
    else:
        layer = ir.AdderConv2d("conv", weight=rng.integers(-20, 21, size=(o, c, 3, 3)), padding=1)
    lo, hi = in_range
    images = rng.integers(lo, hi + 1, size=(2, c, h, w))
    images[0, :, 0, :] = lo  # the most negative input next to the padding
    images[0, :, -1, :] = hi
    engine = engine_case(layer, in_range, images, rng, pe=pe, simd=simd, weights=weights)
    assert engine.params["weights"] == weights and engine.params["lane"] == kind


def test_shift_dense_const_engine_matches_golden():
    rng = np.random.default_rng(11)
    c, h, w, o = 4, 2, 2, 6
    sign = rng.integers(-1, 2, size=(o, c * h * w))
    shift = rng.integers(0, 6, size=(o, c * h * w))
    layer = ir.ShiftDense("fc", sign=sign, shift=shift, max_shift=5)
    in_range = (-128, 127)
    images = rng.integers(-128, 128, size=(3, c, h, w))
    flat = golden.execute(ir.Flatten("flat"), images)
    requant = random_requant(rng, o, layer.out_range(*in_range), relu=False, out_bits=8, negative=True,
                             samples=golden.execute(layer, flat))
    for weights in ("rom", "const"):
        engine = ConvEngine(layer, requant, (c, h, w), in_range, pe=3, simd=4, weights=weights)
        got, _ = simulate(engine, images, rng)
        np.testing.assert_array_equal(got, golden.execute(requant, golden.execute(layer, flat)))


def test_const_weights_fold_into_the_logic():
    """At full parallelism a const engine has no weight memory; with several addresses a lane's
    weights come from a Switch; a bad mode is a clear error."""
    rng = np.random.default_rng(2)
    layer = random_shift_conv(rng, 1, 4, 3, 1)
    requant = random_requant(rng, 4, layer.out_range(0, 255))
    full = ConvEngine(layer, requant, (1, 5, 5), (0, 255), pe=4, simd=9, weights="const")
    frag = Fragment.get(full, None)
    assert "rom" not in dict((name, sub) for sub, name, _ in frag.subfragments)
    rom = ConvEngine(layer, requant, (1, 5, 5), (0, 255), pe=4, simd=9)
    assert "rom" in dict((name, sub) for sub, name, _ in Fragment.get(rom, None).subfragments)
    # The estimate knows that constant shifts are wiring.
    assert estimate_luts(layer, (1, 5, 5), (0, 255), requant, 4, 9, "const") < \
        estimate_luts(layer, (1, 5, 5), (0, 255), requant, 4, 9, "rom")
    with pytest.raises(ValueError, match="weights='flash'"):
        ConvEngine(layer, requant, (1, 5, 5), (0, 255), pe=4, simd=9, weights="flash")
