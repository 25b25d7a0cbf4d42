"""The planner: every engine's folding chosen once, pools included, overrides applied key by key
(no engine is elaborated here)."""

import pytest

from hwgen import ir
from hwgen.hw.conv import choose_folding
from hwgen.hw.plan import beat_period, candidates, cycles, plan
from hwgen.hw.pool import MaxPoolEngine
from hwgen.hw.spec import (DirectFolding, DirectSpec, HeadSpec, LaneOp, PoolFolding, PoolSpec,
                           WinogradFolding, WinogradSpec)
from hwgen.testmodels import random_digits_model


@pytest.fixture(scope="module")
def adder():
    return random_digits_model(seed=0)


def test_specs_follow_the_layers(adder):
    p = plan(adder)
    assert [type(s) for s in p.specs] == [DirectSpec, PoolSpec, DirectSpec, PoolSpec, DirectSpec,
                                          HeadSpec]
    conv1, fc = p.specs[0], p.specs[4]
    assert conv1.layers == ("conv1", "bn1") and conv1.op is LaneOp.L1 and not conv1.dense
    assert fc.layers == ("flatten", "fc", "bn3") and fc.dense and fc.in_shape == (16, 2, 2)
    assert set(p.foldings) == {"conv1", "pool1", "conv2", "pool2", "fc"}
    assert p.auto == p.foldings  # nothing overridden


def test_the_bottleneck_sets_the_pace(adder):
    """The slowest engine at its fastest within the budget; every other the cheapest that keeps up."""
    p = plan(adder)
    direct = [s for s in p.specs if isinstance(s, DirectSpec)]
    pace = max(cycles(s) for s in direct)
    fastest = [min(c[0] for c in candidates(s) if (c[2], c[3]) == choose_folding(candidates(s)))
               for s in direct]
    assert pace == max(fastest)
    for s in direct:
        keeping_up = [c for c in candidates(s) if c[0] <= pace and c[1] <= 1200]
        assert cycles(s) <= pace
        assert min(c[1] for c in keeping_up) == next(c[1] for c in candidates(s)
                                                    if (c[2], c[3]) == (s.folding.pe, s.folding.simd))


def test_pools_keep_up_with_their_producer(adder):
    p = plan(adder)
    pace = max(cycles(s) for s in p.specs if isinstance(s, DirectSpec))
    for before, pool in zip(p.specs, p.specs[1:]):
        if isinstance(pool, PoolSpec):
            c = pool.in_shape[0]
            assert cycles(pool) <= pace and c // pool.folding.lanes <= beat_period(before)
            fewer = [d for d in MaxPoolEngine.valid_lanes(c) if d < pool.folding.lanes]
            assert all(MaxPoolEngine.cycles(pool.in_shape[1:], 2, c, d) > pace
                       or c // d > beat_period(before) for d in fewer)


def test_overrides_win_key_by_key(adder):
    p = plan(adder, {"conv2": {"simd": 9}, "pool1": {"lanes": 8}})
    assert p.foldings["conv2"] == DirectFolding(p.auto["conv2"].pe, 9, "rom")
    assert p.foldings["pool1"] == PoolFolding(8) and p.overrides == {"conv2": {"simd": 9},
                                                                     "pool1": {"lanes": 8}}
    # The weights mode is estimated as asked.
    const = plan(adder, {"conv1": {"weights": "const"}})
    assert const.auto["conv1"].weights == "const"


def test_winograd_layers_get_a_tile_folding():
    p = plan(random_digits_model(seed=0, kind="winograd-adder"), {"conv2": {"overlap": 0}})
    wino = [s for s in p.specs if isinstance(s, WinogradSpec)]
    assert [s.name for s in wino] == ["conv1", "conv2"]
    assert all(isinstance(s.folding, WinogradFolding) for s in wino)
    assert wino[1].folding.overlap == 0


def test_pace_and_names_are_checked(adder):
    with pytest.raises(ir.ModelError, match=r"^folding names 'nope', not a conv, dense or max-pool"):
        plan(adder, {"nope": {"pe": 1}})
    with pytest.raises(ir.ModelError, match=r"^target cycles per image must be a positive integer"):
        plan(adder, target_cycles=0)
    with pytest.raises(ir.ModelError, match=r"^folding of 'pool1': unknown keys \['pe'\]; use 'lanes'"):
        plan(adder, {"pool1": {"pe": 1}})
    slow = plan(adder, target_cycles=4000)
    assert max(cycles(s) for s in slow.specs if isinstance(s, DirectSpec)) <= 4000
