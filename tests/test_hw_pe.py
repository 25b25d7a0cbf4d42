# amaranth: UnusedElaboratable=no
"""The l1 PE in Amaranth's simulator, against hwgen.golden.l1_matrix (shift and mac PEs:
test_hw_shift.py)."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth import signed, unsigned
from amaranth.sim import Simulator

from hwgen import golden, ir
from hwgen.hw.pe import PE, L1PE


def run_pe(pe: PE, xs, ws, steps, rng):
    """Feed ``xs``/``ws`` (K = steps*simd taps each; a weight is what ``pe.lane.encode``
    takes) with random bubbles and stalls; returns the sums in order."""
    out = []
    beats = []
    wb = pe.lane.w_width
    for x, w in zip(xs, ws):
        for s in range(steps):
            sl = slice(s * pe.simd, (s + 1) * pe.simd)
            word = sum(pe.lane.encode(v) << (i * wb) for i, v in enumerate(w[sl]))
            beats.append(([int(v) for v in x[sl]], word, s == 0, s == steps - 1))

    async def tb(ctx):
        queue = list(beats)
        for _ in range(len(beats) * 4 + pe.latency * 4 + 20):
            stall = rng.random() < 0.2
            ctx.set(pe.en, int(not stall))
            if queue and rng.random() < 0.7:
                x, w, first, last = queue[0]
                ctx.set(pe.x, x)
                ctx.set(pe.w.as_value(), w)
                ctx.set(pe.first, first)
                ctx.set(pe.last, last)
                ctx.set(pe.valid, 1)
                if not stall:
                    queue.pop(0)
            else:
                ctx.set(pe.valid, 0)
                # Garbage on the data while not valid must not matter.
                ctx.set(pe.first, int(rng.integers(0, 2)))
                ctx.set(pe.last, int(rng.integers(0, 2)))
            _, _, en, valid, acc = await ctx.tick().sample(pe.en, pe.acc_valid, pe.acc)
            if en and valid:
                out.append(int(acc))
        assert not queue

    sim = Simulator(pe)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return np.array(out, dtype=np.int64)


@pytest.mark.parametrize("simd,steps,x_range,w_range", [
    (1, 5, (0, 255), (-128, 127)),
    (3, 3, (0, 15), (-8, 7)),
    (8, 9, (0, 15), (-20, 20)),
    (9, 1, (0, 255), (-128, 127)),
    (5, 2, (-8, 7), (0, 3)),        # signed inputs, unsigned weights
])
def test_l1_pe_matches_golden(simd, steps, x_range, w_range):
    rng = np.random.default_rng(simd * 100 + steps)
    k, n = simd * steps, 40
    w_lo, w_hi = w_range
    x_lo, x_hi = x_range
    xs = rng.integers(x_lo, x_hi + 1, size=(n, k))
    ws = rng.integers(w_lo, w_hi + 1, size=(n, k))
    # Edge values: most negative weight against the largest input, zero, the other extreme.
    xs[0], ws[0] = x_hi, w_lo
    xs[1], ws[1] = 0, w_lo
    xs[2], ws[2] = x_lo, w_hi
    xs[3], ws[3] = 0, 0
    acc_max = max(-golden.l1_matrix(xs[i:i + 1], ws[i:i + 1])[0, 0] for i in range(n))
    pe = L1PE(simd, x_range, w_range, acc_max=int(acc_max))
    got = run_pe(pe, xs, ws, steps, rng)
    want = np.array([golden.l1_matrix(xs[i], ws[i:i + 1])[0] for i in range(n)])
    np.testing.assert_array_equal(-got, want)


def test_l1_pe_widths_are_exact():
    pe = L1PE(8, (0, 15), (-8, 7), acc_max=8 * 9 * 23)
    assert (pe.x_shape, pe.w_shape, pe.diff_shape) == (unsigned(4), signed(4), signed(6))  # -7..23
    assert pe.lane_max == 23
    assert pe.mag.shape().width == ir.bits_for(0, 8 * 9 * 23)[0]
    assert pe.latency == 2 + 3
    with pytest.raises(TypeError):
        L1PE(0, (0, 1), (0, 1), 1)
