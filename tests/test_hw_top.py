# amaranth: UnusedElaboratable=no
"""ArgmaxHead, the whole Accelerator against hwgen.golden, and generate()'s build output."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from amaranth import signed, unsigned
from amaranth.hdl import Fragment

from hwgen import golden, ir
from hwgen.hw.head import ArgmaxHead, index_bits
from hwgen.buildfolder import BuildFolder
from hwgen.hw.top import Accelerator, generate
from hwgen.testmodels import random_digits_model

from test_hw_pool import add_sink, add_source, pack, run_sim, unpack


# --------------------------------------------------------------------------- argmax head

def head_case(classes, score_shape, vectors, *, gaps=0.3, stalls=0.3):
    dut = ArgmaxHead(classes, score_shape)
    sb, ab = score_shape.width, index_bits(classes)
    beats = [pack(v, sb) for v in vectors]
    got = []

    def setup(sim):
        add_source(sim, dut.i, beats, gaps=gaps)
        add_sink(sim, dut.result, len(beats), got, stalls=stalls)

    run_sim(dut, deadline_cycles=6 * dut.cycles_per_image * len(beats) + 50, setup=setup)
    assert len(got) == len(vectors)
    for k, (raw, v) in enumerate(zip(got, vectors)):
        scores = unpack(raw, sb, classes, score_shape.signed)
        index = (raw >> (classes * sb)) & ((1 << ab) - 1)
        assert scores == [int(s) for s in v], f"vector {k}: scores changed"
        assert index == int(np.argmax(v)), f"vector {k}: argmax {index}, want {np.argmax(v)} of {list(v)}"


@pytest.mark.parametrize("classes", [1, 2, 3, 10, 17])
def test_argmax_matches_numpy(classes):
    rng = np.random.default_rng(classes)
    shape = signed(16)
    lo, hi = -(1 << 15), (1 << 15) - 1
    vectors = [rng.integers(lo, hi + 1, size=classes) for _ in range(20)]
    vectors += [rng.integers(-3, 3, size=classes) for _ in range(20)]        # many ties
    vectors += [np.full(classes, lo), np.full(classes, hi), np.zeros(classes, int)]  # all equal
    one_up = np.full(classes, lo)
    one_up[-1] = lo + 1
    vectors.append(one_up)                                                  # most negative everywhere else
    tie_late = np.full(classes, lo)
    tie_late[classes // 2:] = 5
    vectors.append(tie_late)                                                # first of several maxima
    head_case(classes, shape, vectors)


def test_argmax_unsigned_scores_full_rate():
    rng = np.random.default_rng(7)
    vectors = [rng.integers(0, 256, size=5) for _ in range(30)]
    head_case(5, unsigned(8), vectors, gaps=0.0, stalls=0.0)


# --------------------------------------------------------------------------- whole accelerator

def _conv_available():
    try:
        import hwgen.hw.conv  # noqa: F401
    except ImportError:
        return False
    return True


needs_conv = pytest.mark.skipif(not _conv_available(), reason="hwgen.hw.conv not written yet")


@pytest.fixture(scope="module")
def digits_model():
    return random_digits_model(seed=0)


def digits_images(n=3):
    from hwgen.data import digits

    return np.round(digits()[2][:n] * 255).astype(np.int64)


def check_accelerator(model, x, folding=None, *, gaps=0.2, stalls=0.3):
    """Stream ``x`` through an :class:`Accelerator` of ``model`` with random gaps and
    backpressure; every score and argmax must equal :func:`hwgen.golden.run`'s."""
    want = golden.run(model, x)
    top = Accelerator(model, folding)
    c, h, w = model.input_shape
    beats = [pack(x[n, :, r, col], model.input_bits) for n in range(len(x)) for r in range(h) for col in range(w)]
    got = []

    def setup(sim):
        add_source(sim, top.pixels, beats, gaps=gaps)
        add_sink(sim, top.result, len(x), got, stalls=stalls)

    run_sim(top, deadline_cycles=4 * len(x) * top.cycles_per_image + 20 * len(beats) + 500, setup=setup)
    assert len(got) == len(x), f"{len(got)} of {len(x)} results came out"
    sb, n = top.score_shape.width, top.classes
    for k, raw in enumerate(got):
        scores = unpack(raw, sb, n, top.score_shape.signed)
        index = raw >> (n * sb)
        assert scores == want.scores[k].tolist(), f"image {k}: scores {scores}, want {want.scores[k].tolist()}"
        assert index == want.argmax[k], f"image {k}: argmax {index}, want {want.argmax[k]}"
    return top


@needs_conv
def test_accelerator_matches_golden(digits_model):
    check_accelerator(digits_model, digits_images(3))


@needs_conv
@pytest.mark.parametrize("kind", ["shift", "conv", "shiftadd"])
def test_accelerator_of_each_family_matches_golden(kind):
    """DeepShift, the multiplier baseline and ShiftAddNet (shift conv → signed requant → 1×1
    adder conv, conv after conv without a pool; two dense layers after the flatten)."""
    model = random_digits_model(seed=1, kind=kind)
    top = check_accelerator(model, digits_images(3))
    kinds = [s.kind for s in top.stages]
    if kind == "shiftadd":
        assert kinds == ["shift_conv2d", "adder_conv2d", "maxpool2d", "shift_conv2d", "adder_conv2d", "maxpool2d",
                         "shift_dense", "adder_dense", "argmax"]
        lanes = [s.engine.params["lane"] for s in top.stages if hasattr(s.engine, "lane")]
        assert lanes == ["shift", "l1", "shift", "l1", "shift", "l1"]
    else:
        prefix = "shift_" if kind == "shift" else ""
        assert kinds == [f"{prefix}conv2d", "maxpool2d", f"{prefix}conv2d", "maxpool2d", f"{prefix}dense", "argmax"]


@needs_conv
def test_accelerator_const_weights_matches_golden():
    """Constant weights, at full parallelism for conv1 (no mux) and folded for fc."""
    model = random_digits_model(seed=2, kind="shift")
    folding = {"conv1": {"pe": 8, "simd": 9, "weights": "const"}, "fc": {"weights": "const"}}
    top = check_accelerator(model, digits_images(2), folding)
    params = {s.name: s.engine.params for s in top.stages}
    assert params["conv1"]["weights"] == "const" and (params["conv1"]["pe"], params["conv1"]["simd"]) == (8, 9)
    assert params["fc"]["weights"] == "const" and params["conv2"]["weights"] == "rom"


@needs_conv
def test_accelerator_throughput_and_latency(digits_model):
    """Without stalls, results leave every cycles_per_image cycles and within latency_cycles."""
    model = digits_model
    x = digits_images(3)
    top = Accelerator(model)
    beats = [pack(x[n, :, r, col], 8) for n in range(len(x)) for r in range(8) for col in range(8)]
    got, times = [], []

    def setup(sim):
        add_source(sim, top.pixels, beats, gaps=0.0)
        add_sink(sim, top.result, len(x), got, stalls=0.0, times=times)

    run_sim(top, deadline_cycles=3 * top.latency_cycles + 100, setup=setup)
    assert len(got) == len(x)
    assert times[0] <= top.latency_cycles + 1, f"first result at cycle {times[0]}, estimate {top.latency_cycles}"
    gaps = np.diff(times)
    assert (gaps <= top.cycles_per_image).all(), f"results every {gaps.tolist()} cycles, bound {top.cycles_per_image}"


@needs_conv
def test_generate_writes_verilog_and_manifest(digits_model, tmp_path):
    v, doc = generate(digits_model)
    BuildFolder(tmp_path).write_design(v, doc)
    assert (tmp_path / "hwgen_top.v").read_text() == v
    assert json.loads((tmp_path / "manifest.json").read_text()) == doc
    assert v.startswith("`timescale 1ns/1ps\n")
    assert re.search(r"^module hwgen_top\s*\(", v, re.M)
    assert doc["format"] == "hwgen-build" and doc["version"] == 1 and doc["top"] == "hwgen_top"
    assert doc["verilog"] == "hwgen_top.v" and doc["clock"] == "clk" and doc["reset"] == "rst"
    assert doc["input_shape"] == [1, 8, 8]

    def port_width(direction, name):
        found = re.search(rf"^\s*{direction}\s+(?:wire\s+)?(?:\[(\d+):0\]\s+)?{name}\s*;", v, re.M)
        assert found, f"no {direction} port {name} in the Verilog"
        return int(found.group(1)) + 1 if found.group(1) else 1

    px, res = doc["ports"]["pixels"], doc["ports"]["result"]
    assert px == {"channels": 1, "bits": 8, "payload_width": 8}
    assert port_width("input", "pixels__payload") == px["payload_width"]
    assert port_width("output", "result__payload") == res["payload_width"]
    for p in ("pixels__valid", "result__ready", "clk", "rst"):
        assert port_width("input", p) == 1
    for p in ("pixels__ready", "result__valid"):
        assert port_width("output", p) == 1
    lo, hi = digits_model.value_ranges()[-1]
    assert (res["score_bits"], res["score_signed"]) == ir.bits_for(lo, hi)
    assert res["classes"] == 10 and res["argmax_bits"] == 4
    assert res["argmax_offset"] == 10 * res["score_bits"]
    assert res["payload_width"] == res["argmax_offset"] + res["argmax_bits"]
    kinds = [e["kind"] for e in doc["engines"]]
    assert kinds == ["adder_conv2d", "maxpool2d", "adder_conv2d", "maxpool2d", "adder_dense", "argmax"]
    assert doc["cycles_per_image"] == max(e["cycles_per_image"] for e in doc["engines"])
    assert not list(tmp_path.glob("*.tmp"))


def test_unsupported_layer_raises_model_error():
    rng = np.random.default_rng(0)
    model = ir.Model(name="mac", input_shape=(1, 4, 4), input_bits=8, input_scale=1.0, layers=[
        ir.Requant("bn0", mult=np.array([1]), bias=np.array([0]), shift=0),
        ir.Conv2d("conv", weight=rng.integers(-2, 3, size=(2, 1, 3, 3)), padding=1),
        ir.Requant("bn", mult=np.array([1, 1]), bias=np.array([0, 0]), shift=4),
        ir.Flatten("flat"),
        ir.AdderDense("fc", weight=rng.integers(0, 9, size=(3, 32))),
        ir.Requant("bn2", mult=np.array([1, 1, 1]), bias=np.array([0, 0, 0]), shift=0, out_bits=16, relu=False),
    ])
    with pytest.raises(ir.ModelError, match=r"requant layer 'bn0' must follow a conv or dense layer"):
        Accelerator(model)
    strided = ir.Model(name="s", input_shape=(1, 4, 4), input_bits=8, input_scale=1.0, layers=[
        ir.Conv2d("conv", weight=rng.integers(-2, 3, size=(2, 1, 3, 3)), padding=1, stride=2),
        ir.Requant("bn", mult=np.array([1, 1]), bias=np.array([0, 0]), shift=4),
        ir.Flatten("flat"),
        ir.Dense("fc", weight=rng.integers(0, 9, size=(3, 8))),
        ir.Requant("bn2", mult=np.array([1, 1, 1]), bias=np.array([0, 0, 0]), shift=0, out_bits=16, relu=False),
    ])
    top = Accelerator(strided)  # stride 2 has an engine now (tests/test_sim_layers.py)
    assert top.stages[0].engine.out_hw == (2, 2) and top.stages[0].engine.stride == 2
    discard(top)


def discard(top):
    """``top`` was built to be inspected, not elaborated: no UnusedElaboratable warnings."""
    for e in [top, *top.engines]:
        e._MustUse__silence = True


def test_dense_layers_must_end_the_model():
    rng = np.random.default_rng(0)

    def rq(name, n, **kw):
        return ir.Requant(name, mult=np.ones(n, int), bias=np.zeros(n, int), shift=0, **kw)

    pool_after_dense = ir.Model(name="d", input_shape=(1, 4, 4), input_bits=8, input_scale=1.0, layers=[
        ir.Flatten("flat"),
        ir.ShiftDense("fc", sign=rng.integers(-1, 2, size=(4, 16)), shift=rng.integers(0, 3, size=(4, 16))),
        rq("bn", 4, out_bits=8, relu=False),
        ir.Flatten("flat2"),
        ir.Dense("fc2", weight=rng.integers(-3, 4, size=(3, 4))),
        rq("bn2", 3, out_bits=16, relu=False),
    ])
    with pytest.raises(ir.ModelError, match=r"'flat2' of kind 'flatten' follows the dense layers"):
        Accelerator(pool_after_dense)
    discard(Accelerator(ir.Model(name="dd", input_shape=(1, 4, 4), input_bits=8, input_scale=1.0,
                                 layers=pool_after_dense.layers[:3] + pool_after_dense.layers[4:])))


def test_generate_refuses_a_model_without_engines():
    rng = np.random.default_rng(0)
    model = ir.Model(name="mac", input_shape=(1, 4, 4), input_bits=8, input_scale=1.0, layers=[
        ir.Flatten("flat"),
        ir.Dense("fc", weight=rng.integers(-2, 3, size=(3, 16))),
    ])
    with pytest.raises(ir.ModelError, match=r"kind 'dense' has no hardware engine|followed by a"):
        generate(model)


@needs_conv
def test_folding_override_reaches_the_engine(digits_model):
    top = Accelerator(digits_model, folding={"conv2": {"pe": 4, "simd": 8}})
    conv2 = next(s.engine for s in top.stages if s.name == "conv2")
    assert (conv2.params["pe"], conv2.params["simd"]) == (4, 8)
    assert top.folding == {"conv2": {"pe": 4, "simd": 8}}
    Fragment.get(top, None)  # elaborates: the folded design builds


def test_missing_requant_raises_model_error():
    rng = np.random.default_rng(0)
    model = ir.Model(name="bare", input_shape=(1, 4, 4), input_bits=8, input_scale=1.0, layers=[
        ir.Flatten("flat"),
        ir.AdderDense("fc", weight=rng.integers(0, 9, size=(3, 16))),
    ])
    with pytest.raises(ir.ModelError, match=r"must be followed by a requant layer"):
        Accelerator(model)


def test_unknown_folding_name_raises_model_error(digits_model):
    with pytest.raises(ir.ModelError, match=r"folding names 'nope'"):
        Accelerator(digits_model, folding={"nope": {"pe": 2}})


def test_bad_folding_values_raise_model_error(digits_model):
    with pytest.raises(ir.ModelError, match=r"folding of 'conv1': weights='flash'; use 'rom' .* or 'const'"):
        Accelerator(digits_model, folding={"conv1": {"weights": "flash"}})
    with pytest.raises(ir.ModelError, match=r"folding of 'conv1': unknown keys \['speed'\]; use 'pe', 'simd', "
                                            r"'weights'"):
        Accelerator(digits_model, folding={"conv1": {"speed": 2}})
    with pytest.raises(ir.ModelError, match=r"^conv1: pe=3 must divide"):
        Accelerator(digits_model, folding={"conv1": {"pe": 3}})


@pytest.mark.parametrize("kind", ["adder", "shift", "conv", "shiftadd"])
def test_auto_folding_fits_the_budget(kind):
    """The default folding of every family keeps the estimated engines within a UP5K."""
    from hwgen.hw.conv import estimate_luts

    model = random_digits_model(seed=0, kind=kind)
    top = Accelerator(model)
    total = 0
    for s in top.stages:
        e = s.engine
        if hasattr(e, "lane"):
            total += estimate_luts(e.layer, e.in_shape, e.in_range, e.requant, e.pe, e.simd, e.weights)
    discard(top)
    assert total <= 5280, total


def test_random_models_keep_the_adder_default():
    a, b = random_digits_model(seed=0), random_digits_model(seed=0, kind="adder")
    assert [layer.to_json() for layer in a.layers] == [layer.to_json() for layer in b.layers]
    for la, lb in zip(a.layers, b.layers):
        for key, arr in la.arrays().items():
            np.testing.assert_array_equal(arr, lb.arrays()[key])
    shift = random_digits_model(seed=0, kind="shift")
    assert [layer.kind for layer in shift.layers if layer.kind.startswith("shift")] == \
        ["shift_conv2d", "shift_conv2d", "shift_dense"]
    assert max(int(layer.shift.max()) for layer in shift.layers if layer.kind.startswith("shift")) == 7
    with pytest.raises(ValueError, match="kind must be one of"):
        random_digits_model(seed=0, kind="winograd")


# --------------------------------------------------------------------------- max-pool lanes

@needs_conv
def test_pools_fold_channels_by_default():
    """The pools of a digits model compare fewer channels per cycle than they have (the conv
    engines feeding them leave them idle otherwise), and the whole accelerator still matches
    golden, keeping its pace."""
    model = random_digits_model(seed=0, kind="winograd-adder")
    top = check_accelerator(model, digits_images(2))
    pools = {s.name: s.engine for s in top.stages if s.kind == "maxpool2d"}
    assert {name: (e.channels, e.lanes) for name, e in pools.items()} == {"pool1": (8, 1), "pool2": (16, 1)}
    assert {name: top.auto_folding[name] for name in pools} == {"pool1": {"lanes": 1}, "pool2": {"lanes": 1}}
    pace = max(s.engine.cycles_per_image for s in top.stages if s.kind not in ("maxpool2d", "argmax"))
    for e in pools.values():
        assert e.cycles_per_image == e.in_hw[0] * e.in_hw[1] * e.channels // e.lanes <= pace
    assert top.cycles_per_image == pace


def test_pool_lanes_follow_the_producer(digits_model):
    """A conv engine's output register also gathers a pixel's groups, so a pool may hold a pixel
    no longer than a group takes: the adder model's conv2 (16 groups of 9 cycles) gets a pool
    of 2 lanes (8 cycles a pixel), not 1 (16), though either keeps the image pace."""
    top = Accelerator(digits_model)
    discard(top)
    lanes = {s.name: s.engine.params["lanes"] for s in top.stages if s.kind == "maxpool2d"}
    assert lanes == {"pool1": 1, "pool2": 2}
    conv2 = next(s.engine for s in top.stages if s.name == "conv2")
    assert (conv2.groups, max(conv2.steps, conv2.rq_slots)) == (16, 9)


@needs_conv
def test_pool_lanes_override(digits_model, tmp_path):
    top = Accelerator(digits_model, folding={"pool1": {"lanes": 4}, "pool2": {"lanes": 16}})
    engines = {s.name: s.engine for s in top.stages}
    assert (engines["pool1"].lanes, engines["pool2"].lanes) == (4, 16)
    assert engines["pool1"].cycles_per_image == 8 * 8 * 2 and engines["pool2"].cycles_per_image == 4 * 4
    discard(top)
    _, doc = generate(digits_model, folding={"pool1": {"lanes": 2}})
    pools = {e["name"]: e for e in doc["engines"] if e["kind"] == "maxpool2d"}
    assert pools["pool1"]["lanes"] == 2 and pools["pool1"]["cycles_per_image"] == 8 * 8 * 4
    assert doc["folding"]["pool1"] == {"lanes": 2} and doc["folding"]["pool2"] == {"lanes": 2}
    assert doc["folding_overrides"] == {"pool1": {"lanes": 2}}


def test_bad_pool_lanes_raise_model_error(digits_model):
    for lanes in (3, 32):
        with pytest.raises(ir.ModelError, match=rf"folding of 'pool1': lanes={lanes!r} must divide its 8 channels; "
                                                r"pick one of \[1, 2, 4, 8\]") as err:
            Accelerator(digits_model, folding={"pool1": {"lanes": lanes}})
        assert "\n" not in str(err.value)
    for lanes in (0, "2", True):
        with pytest.raises(ir.ModelError, match=rf"^folding of 'pool1': lanes={lanes!r} must be a positive integer$"):
            Accelerator(digits_model, folding={"pool1": {"lanes": lanes}})
    with pytest.raises(ir.ModelError, match=r"folding of 'pool2': unknown keys \['pe'\]; use 'lanes'"):
        Accelerator(digits_model, folding={"pool2": {"lanes": 2, "pe": 2}})
    with pytest.raises(ir.ModelError, match=r"folding of 'conv1': unknown keys \['lanes'\]"):
        Accelerator(digits_model, folding={"conv1": {"lanes": 2}})
