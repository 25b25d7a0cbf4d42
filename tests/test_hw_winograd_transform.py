# amaranth: UnusedElaboratable=no
"""The Winograd engine's input transform in Amaranth's simulator: ``V = Bᵀ d B`` of every tile,
a row per cycle, against the transform sets of hwgen.nn.winograd, with and without overlap."""

from __future__ import annotations

import numpy as np
import pytest

from hwgen import ir
from hwgen.hw.winograd_transform import InputTransform
from hwgen.nn.winograd import transform_set

from simbench import run_benches


def bt_of(name: str) -> np.ndarray:
    return transform_set(name)["bt"].numpy().astype(np.int64)


def run(dut: InputTransform, beats, rng, *, p_gap=0.0, p_stall=0.0):
    """Present ``beats`` (a list of ``(d (4, 4), first, last, beat, group)``) as a
    :class:`~hwgen.hw.winograd_buffer.TilePairBuffer` would: a column one enabled cycle after
    its issue, no beat started while ``hold``.  Returns the rows taken (one per enabled cycle
    with ``valid``: ``(v, row, first, last, group, u_addr one enabled cycle before)``) and the
    enabled cycles to the last row."""
    cols, rows = dut.columns, dut.rows
    columns = [(d[:, j], j, first, last, beat, group)
               for d, first, last, beat, group in beats for j in range(4)]
    want = 4 * len(beats)
    got, u_addr, cycles = [], [None], [0]

    async def bench(ctx):
        pending, enabled = 0, 0
        for _ in range(20 * want + 100):
            en = int(rng.random() >= p_stall)
            ctx.set(dut.en, en)
            sampled = await ctx.tick().sample(rows.valid, rows.v, rows.row, rows.first, rows.last,
                                              rows.group, rows.u_addr, cols.hold)
            valid, v, row, first, last, group, addr, hold = sampled[2:]
            if not en:
                continue
            enabled += 1
            if valid:
                got.append(([int(x) for x in v], row, bool(first), bool(last), group, u_addr[0]))
                if len(got) == want:
                    cycles[0] = enabled
                    return
            u_addr[0] = addr
            # The column issued in this enabled cycle is presented in the next.
            issue = (pending < len(columns) and rng.random() >= p_gap
                     and not (hold and columns[pending][1] == 0))
            if issue:
                data, index, c_first, c_last, beat, c_group = columns[pending]
                ctx.set(cols.data, [int(x) for x in data])
                ctx.set(cols.index, index)
                ctx.set(cols.first, c_first)
                ctx.set(cols.last, c_last)
                ctx.set(cols.beat, beat)
                ctx.set(cols.group, c_group)
                pending += 1
            ctx.set(cols.valid, int(issue))
        raise AssertionError(f"{len(got)} of {want} rows")

    run_benches(dut, bench)
    return got, cycles[0]


def random_beats(rng, n, lo, hi, groups, channels):
    """``n`` beats of random tiles in ``[lo, hi]`` (some zeros, as the padding gives) with
    their schedule tags."""
    out = []
    for k in range(n):
        d = rng.integers(lo, hi + 1, size=(4, 4))
        d[rng.random((4, 4)) < 0.2] = 0
        channel, beat = k % channels, k % (groups * channels)
        out.append((d, channel == 0, channel == channels - 1, beat, beat // channels))
    return out


@pytest.mark.parametrize("transform", ["standard", "balanced"])
@pytest.mark.parametrize("overlap", [True, False])
@pytest.mark.parametrize("in_range", [(0, 255), (-8, 7)])
def test_rows_are_bt_d_b(transform, overlap, in_range):
    rng = np.random.default_rng(len(transform) + 2 * overlap + in_range[0])
    bt = bt_of(transform)
    groups, channels = 2, 3
    dut = InputTransform(bt=bt, in_range=in_range, overlap=overlap, beats=groups * channels,
                         groups=groups)
    beats = random_beats(rng, 24, *in_range, groups, channels)
    got, _ = run(dut, beats, rng, p_gap=0.3, p_stall=0.3)
    want = []
    for d, first, last, beat, group in beats:
        v = bt @ d @ bt.T
        want += [(list(v[r]), r, first, last, group, beat * 4 + r) for r in range(4)]
    assert len(got) == len(want)
    for k, (g, e) in enumerate(zip(got, want)):
        assert g == e, f"row {k}: got {g}, want {e}"


@pytest.mark.parametrize("overlap, period", [(True, 4), (False, 7)])
def test_beat_period(overlap, period):
    """Columns offered every cycle: a beat per 4 cycles with the second buffer, per 7 without."""
    rng = np.random.default_rng(2)
    dut = InputTransform(bt=bt_of("standard"), in_range=(0, 15), overlap=overlap, beats=1,
                         groups=1)
    beats = random_beats(rng, 10, 0, 15, 1, 1)
    got, cycles = run(dut, beats, rng)
    assert [g[1] for g in got] == [0, 1, 2, 3] * 10
    assert period * 9 + 5 <= cycles <= period * 10 + 6


@pytest.mark.parametrize("transform", ["standard", "balanced"])
def test_widths_are_the_ir_ranges(transform):
    """The exact intervals of ``V`` are the integer model's (:meth:`v_range`)."""
    bt = bt_of(transform)
    layer = ir.WinogradAdderConv2d(name="w", u=np.zeros((1, 1, 4, 4), np.int64), bt=bt,
                                   at=transform_set(transform)["at"].numpy().astype(np.int64))
    for in_range in [(0, 255), (-8, 7), (3, 9)]:
        dut = InputTransform(bt=bt, in_range=in_range, overlap=True, beats=1, groups=1)
        v_lo, v_hi = layer.v_range(*in_range)
        assert dut.v_ranges == [[(int(v_lo[r, c]), int(v_hi[r, c])) for c in range(4)]
                                for r in range(4)]


def test_validation():
    bt = bt_of("standard")
    with pytest.raises(ValueError, match=r"^bt must be a 4×4 integer matrix with entries 0, ±1"):
        InputTransform(bt=bt * 3, in_range=(0, 15), overlap=True, beats=1, groups=1)
    with pytest.raises(ValueError, match=r"^in_range must not be empty, not \(3, 2\)$"):
        InputTransform(bt=bt, in_range=(3, 2), overlap=True, beats=1, groups=1)
    with pytest.raises(TypeError, match=r"^beats must be a positive integer, not 0$"):
        InputTransform(bt=bt, in_range=(0, 15), overlap=True, beats=0, groups=1)
    with pytest.raises(TypeError):
        InputTransform(bt, (0, 15), True, 1, 1)  # keyword-only
