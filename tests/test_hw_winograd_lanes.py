# amaranth: UnusedElaboratable=no
"""The Winograd engine's l1 lanes with the folded output transform in Amaranth's simulator:
rows of ``V`` in, ``Aᵀ(-Σ_c |u - V|)A`` out, against hwgen.golden (with ``Bᵀ`` the identity,
the golden model's tile is ``V`` itself) and the transform sets of hwgen.nn.winograd."""

from __future__ import annotations

import numpy as np
import pytest

from hwgen import golden, ir
from hwgen.hw.winograd_lanes import TileLanes
from hwgen.nn.winograd import transform_set

from simbench import run_benches


def matrices(name: str):
    t = transform_set(name)
    return t["bt"].numpy().astype(np.int64), t["at"].numpy().astype(np.int64)


def run(dut: TileLanes, v: np.ndarray, groups: int, rng, *, p_gap=0.0, p_stall=0.0):
    """Present the rows of ``v`` ``(N, C, 4, 4)`` as the input transform would, for every tile
    the ``groups`` passes over the channels, ``u_addr`` one enabled cycle ahead of its row.
    Returns the results taken (``y``, ``group``) in order and the cycles they were taken in."""
    n, c = v.shape[:2]
    rows = [(v[t, ch, r], r, ch == 0, ch == c - 1, g, (g * c + ch) * 4 + r)
            for t in range(n) for g in range(groups) for ch in range(c) for r in range(4)]
    got, taken = [], []
    pe = len(dut.tiles.y)

    async def bench(ctx):
        pending = 0
        for cycle in range(20 * len(rows) + 100):
            en = int(rng.random() >= p_stall)
            present = en and pending < len(rows) and rng.random() >= p_gap
            if present:
                ctx.set(dut.rows.u_addr, rows[pending][5])
            ctx.set(dut.en, en)
            _, _, done, y, group = await ctx.tick().sample(dut.tiles.done, dut.tiles.y,
                                                           dut.tiles.group)
            if en and done:
                got.append(([[int(y[p][k]) for k in range(4)] for p in range(pe)], group))
                taken.append(cycle)
                if len(got) == n * groups:
                    return
            if en:
                if present:
                    values, r, first, last, g, _ = rows[pending]
                    ctx.set(dut.rows.v, [int(x) for x in values])
                    ctx.set(dut.rows.row, r)
                    ctx.set(dut.rows.first, first)
                    ctx.set(dut.rows.last, last)
                    ctx.set(dut.rows.group, g)
                    pending += 1
                ctx.set(dut.rows.valid, int(present))
        raise AssertionError(f"{len(got)} of {n * groups} tiles")

    run_benches(dut, bench)
    return got, taken


CASES = [
    # (C, O, pe, transform, in_range)
    (1, 4, 1, "standard", (0, 255)),
    (3, 4, 2, "balanced", (0, 15)),
    (2, 6, 3, "standard", (-8, 7)),
    (4, 2, 2, "balanced", (-100, 100)),
]


@pytest.mark.parametrize("case", CASES, ids=[f"c{c[0]}-o{c[1]}-pe{c[2]}-{c[3]}" for c in CASES])
def test_tiles_match_golden(case):
    c, o, pe, transform, (lo, hi) = case
    rng = np.random.default_rng(c * 10 + o + pe)
    bt, at = matrices(transform)
    u = rng.integers(-4 * hi - 8, 4 * hi + 9, size=(o, c, 4, 4))
    d = rng.integers(lo, hi + 1, size=(8, c, 4, 4))
    d[0], d[1] = lo, hi  # the ends of the interval: the widest terms
    d[2, :, ::2] = 0     # zeros, as the padding gives
    v = np.einsum("ik,nckl,jl->ncij", bt, d, bt)
    layer = ir.WinogradAdderConv2d(name="w", u=u, bt=bt, at=at)
    dut = TileLanes(u=u, v_range=layer.v_range(lo, hi), at=at, pe=pe)
    got, _ = run(dut, v, o // pe, rng, p_gap=0.3, p_stall=0.3)
    # The golden model on V as the input tile (padding 0, Bᵀ the identity): -Y.
    want_y = -golden.winograd_adder(v, u, np.eye(4, dtype=np.int64), at, 0)  # (N, O, 2, 2)
    want = [([list(want_y[t, g * pe + p].reshape(4)) for p in range(pe)], g)
            for t in range(v.shape[0]) for g in range(o // pe)]
    assert len(got) == len(want)
    for k, (g, e) in enumerate(zip(got, want)):
        assert g == e, f"result {k}: got {g}, want {e}"


def test_one_row_per_cycle():
    """Rows every cycle: a result per ``C · 4`` cycles, :attr:`latency` after its last row."""
    rng = np.random.default_rng(4)
    bt, at = matrices("standard")
    u = rng.integers(-600, 601, size=(2, 2, 4, 4))
    v = np.einsum("ik,nckl,jl->ncij", bt, rng.integers(0, 256, size=(5, 2, 4, 4)), bt)
    layer = ir.WinogradAdderConv2d(name="w", u=u, bt=bt, at=at)
    dut = TileLanes(u=u, v_range=layer.v_range(0, 255), at=at, pe=2)
    _, taken = run(dut, v, 1, rng)
    # The first row is presented in cycle 1 (its u_addr in cycle 0); the last of tile t in
    # cycle 8t + 8.
    assert taken == [8 * t + 8 + dut.latency for t in range(5)]


def test_validation():
    bt, at = matrices("standard")
    u = np.zeros((4, 1, 4, 4), np.int64)
    v_range = (np.zeros((4, 4), np.int64), np.ones((4, 4), np.int64))
    with pytest.raises(ValueError, match=r"^pe must divide the 4 output channels, not 3$"):
        TileLanes(u=u, v_range=v_range, at=at, pe=3)
    with pytest.raises(ValueError, match=r"^u must be an integer array of shape \(O, C, 4, 4\)"):
        TileLanes(u=u[..., :3], v_range=v_range, at=at, pe=1)
    with pytest.raises(ValueError, match=r"^at must be a 2×4 integer matrix"):
        TileLanes(u=u, v_range=v_range, at=bt, pe=1)
    with pytest.raises(TypeError):
        TileLanes(u, v_range, at, 1)  # keyword-only
