"""Random models as a property: every example is built, simulated and compared bit for bit.

A hypothesis strategy draws an integer model of :func:`hwgen.testmodels.random_digits_model`
(every family it makes: adder, shift, conv, shiftadd, winograd-adder, so every layer kind and
max-pool), a folding (pe, simd, rom or const weights, pool lanes; or the automatic one), extreme
weights (some set to the ends of their range) and test images among which all-zero, all-full
and checkered ones.  :func:`hwgen.flow.build` writes the build folder and
:func:`hwgen.simulate.simulate` runs its cocotb testbench, which compares every result with
the golden model's (``vectors.npz``).

The fast tier (default run) takes two examples on Icarus.  The deep tier runs
``--deep N`` examples, a quarter of them on Verilator, and records the counts in
``benchmarks/property.json``::

    .venv/bin/python -m pytest -x -q tests/test_property.py --deep 40
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hwgen import data, flow, ir
from hwgen.hw import divisors
from hwgen.hw.window import valid_simd
from hwgen.simulate import simulate
from hwgen.testmodels import RANDOM_KINDS, random_digits_model

RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "property.json"
COMMAND = ".venv/bin/python -m pytest -x -q tests/test_property.py --deep {n}"
IMAGE_SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def calibration():
    """The calibration images of :func:`random_digits_model`, read once."""
    return np.round(data.digits()[0][:64] * 255).astype(np.int64)


# --------------------------------------------------------------------------- strategies

def _image(kind: str, rng: np.random.Generator) -> np.ndarray:
    if kind == "zero":
        return np.zeros(IMAGE_SHAPE, np.float32)
    if kind == "full":
        return np.ones(IMAGE_SHAPE, np.float32)
    if kind == "checker":
        yy, xx = np.indices(IMAGE_SHAPE[1:])
        return ((yy + xx) % 2).astype(np.float32)[None]
    if kind == "binary":
        return rng.integers(0, 2, size=IMAGE_SHAPE).astype(np.float32)
    return rng.random(IMAGE_SHAPE, dtype=np.float32)


images = st.lists(st.sampled_from(["zero", "full", "checker", "binary", "random"]),
                  min_size=1, max_size=6)
#: How a layer's weights are pushed to their extremes: untouched, a share set to the low end,
#: to the high end, or to both ends at random.
extremes = st.one_of(st.just("none"), st.sampled_from(["low", "high", "both"]))


def _with_extremes(model: ir.Model, how: str, share: float, rng: np.random.Generator) -> None:
    """Set ``share`` of each weight layer's weights to the ends of their range, in place."""
    if how == "none":
        return
    for layer in model.layers:
        arrays = []
        if hasattr(layer, "sign"):
            arrays = [(layer.sign, -1, 1), (layer.shift, 0, int(layer.max_shift))]
        elif isinstance(getattr(layer, "u", None), np.ndarray):
            arrays = [(layer.u, -600, 899)]
        elif isinstance(getattr(layer, "weight", None), np.ndarray):
            arrays = [(layer.weight, -128, 127)]
        for a, lo, hi in arrays:
            pick = rng.random(a.shape) < share
            ends = {"low": np.full(a.shape, lo), "high": np.full(a.shape, hi),
                    "both": np.where(rng.random(a.shape) < 0.5, lo, hi)}[how]
            a[pick] = ends[pick]


@st.composite
def foldings(draw, model: ir.Model) -> dict | None:
    """None (the automatic folding) or an override for some of the model's engines."""
    if draw(st.booleans()):
        return None
    fold, shape = {}, tuple(model.input_shape)
    for layer in model.layers:
        if layer.kind == "max_pool2d":
            if draw(st.booleans()):
                fold[layer.name] = {"lanes": draw(st.sampled_from(divisors(shape[0])))}
        elif layer.kind == "winograd_adder_conv2d":
            if draw(st.booleans()):
                fold[layer.name] = {"pe": draw(st.sampled_from(divisors(layer.u.shape[0]))),
                                    "overlap": draw(st.sampled_from([0, 1]))}
        elif isinstance(getattr(layer, "weight", None), np.ndarray) or hasattr(layer, "sign"):
            w = layer.weight if isinstance(getattr(layer, "weight", None), np.ndarray) else layer.sign
            o, c = w.shape[:2]
            k = int(np.prod(w.shape[2:])) if w.ndim == 4 else 1
            entry = {}
            if draw(st.booleans()):
                entry["pe"] = draw(st.sampled_from(divisors(o)))
                entry["simd"] = draw(st.sampled_from(valid_simd(c, k)))
            if draw(st.booleans()):
                entry["weights"] = draw(st.sampled_from(["rom", "const"]))
            if entry:
                fold[layer.name] = entry
        shape = _shape_after(layer, shape)
    return fold


def _shape_after(layer, shape):
    from hwgen import golden

    return golden.execute(layer, np.zeros((1, *shape), np.int64)).shape[1:]


@st.composite
def examples(draw, calibration, simulators):
    kind = draw(st.sampled_from(RANDOM_KINDS))
    seed = draw(st.integers(0, 2 ** 31 - 1))
    model = random_digits_model(seed=seed, kind=kind, calibration=calibration)
    rng = np.random.default_rng(seed)
    how = draw(extremes)
    share = draw(st.one_of(st.just(1.0), st.floats(0.05, 0.5)))
    _with_extremes(model, how, share, rng)
    return {"kind": kind, "seed": seed, "model": model, "extremes": (how, share),
            "folding": draw(foldings(model)), "images": draw(images),
            "simulator": draw(st.sampled_from(simulators))}


# --------------------------------------------------------------------------- the property

def check_example(ex: dict, out_dir: Path) -> dict:
    """Build and simulate ``ex``; returns the simulation summary (status 0: bit-exact)."""
    rng = np.random.default_rng(ex["seed"])
    x = np.stack([_image(k, rng) for k in ex["images"]])
    y = rng.integers(0, 10, size=len(x))
    ds = data.from_arrays(x, y, x_test=x, y_test=y, classes=[str(i) for i in range(10)],
                          name="property")
    flow.build(ex["model"], out_dir, folding=ex["folding"], dataset=ds)
    res = simulate(out_dir, ex["simulator"], images=None)
    d = len(flow.directed_images(ex["model"]))
    assert res["images"] == len(x) and res["directed"] == d
    assert res["received"] == len(x) + d, f"{len(x) + d} images sent, {res['received']} results"
    return res


def describe(ex: dict) -> str:
    return (f"{ex['kind']} seed={ex['seed']} extremes={ex['extremes']} folding={ex['folding']} "
            f"images={ex['images']} on {ex['simulator']}")


def run_property(n: int, simulators: list[str], calibration, tmp_path: Path, record: dict) -> None:
    @settings(max_examples=n, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(examples(calibration, simulators))
    def prop(ex):
        res = check_example(ex, tmp_path / "build")
        record["models"] += 1
        record["kinds"][ex["kind"]] += 1
        record["simulators"][ex["simulator"]] += 1
        record["images"] += res["received"]
        if res["status"] != 0:
            record["mismatched"] += 1
            record["failures"].append(describe(ex))
        assert res["status"] == 0, f"mismatch: {describe(ex)}: {res['mismatches'][:2]}"

    prop()


def _record() -> dict:
    return {"models": 0, "mismatched": 0, "images": 0, "kinds": Counter(),
            "simulators": Counter(), "failures": []}


def test_random_models_are_bit_exact(calibration, tmp_path, request):
    """Fast tier: two drawn examples on Icarus."""
    if request.config.getoption("--deep"):
        pytest.skip("the deep tier runs instead")
    record = _record()
    run_property(2, ["icarus"], calibration, tmp_path, record)
    assert record["models"] >= 2 and record["mismatched"] == 0


def test_deep_random_models(calibration, tmp_path, request):
    """Deep tier (``--deep N``): N examples, a quarter on Verilator; counts to property.json."""
    n = request.config.getoption("--deep")
    if not n:
        pytest.skip("deep tier: run with --deep N")
    record = _record()
    t0 = time.perf_counter()
    try:
        run_property(n, ["icarus", "icarus", "icarus", "verilator"], calibration, tmp_path, record)
    finally:
        doc = dict(record, kinds=dict(record["kinds"]), simulators=dict(record["simulators"]),
                   examples_asked=n, seconds=round(time.perf_counter() - t0, 1),
                   command=COMMAND.format(n=n))
        RESULTS.write_text(json.dumps(doc, indent=2) + "\n")
    assert record["mismatched"] == 0


def test_extremes_reach_the_ends(calibration):
    """The extreme-weight transform really sets weights to the ends of their ranges."""
    rng = np.random.default_rng(0)
    for kind in RANDOM_KINDS:
        model = random_digits_model(seed=1, kind=kind, calibration=calibration[:16])
        _with_extremes(model, "both", 1.0, rng)
        for layer in model.layers:
            if hasattr(layer, "sign"):
                assert set(np.unique(layer.shift)) <= {0, int(layer.max_shift)}
            elif isinstance(getattr(layer, "u", None), np.ndarray):
                assert set(np.unique(layer.u)) <= {-600, 899}
            elif isinstance(getattr(layer, "weight", None), np.ndarray):
                assert set(np.unique(layer.weight)) == {-128, 127}


def test_directed_vectors_are_the_ends_of_the_range(calibration):
    """Item 3 of issue 14: every build's vectors hold zero, full-scale and checkered images."""
    model = random_digits_model(seed=0, calibration=calibration[:16])
    v = flow.test_vectors(model)
    d = v["x_directed"]
    top = (1 << model.input_bits) - 1
    assert d.shape == (4, *model.input_shape) and set(np.unique(d)) == {0, top}
    assert not d[0].any() and (d[1] == top).all() and (d[2] + d[3] == top).all()
    assert d[2, 0, 0, 0] == 0 and d[2, 0, 0, 1] == top  # every neighbour differs
    from hwgen import golden

    np.testing.assert_array_equal(v["scores_directed"], golden.run(model, d).scores)
    assert len(v["x"]) == len(v["labels"]) == len(v["scores"])  # the user's images unchanged
