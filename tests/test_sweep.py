"""hwgen.sweep: spec validation, the points' cross product, local and Dask runs giving the same
table, and a sweep killed half way that finishes on the next run without redoing points."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hwgen import ir, sweep
from hwgen.sweep import SpecError, load_spec, points, read_results, run_sweep
from hwgen.synth import DEVICES

ROOT = Path(__file__).resolve().parent.parent
# Figures and parameters of a row: what two runs of the same point must agree on.
SAME = ["point", "key", "source", "act_bits", "weight_bits", "folding", "device", "status", *sweep.FIGURES]


def tiny_model() -> ir.Model:
    """flatten → adder dense (2×64) → requant on 4-bit 8×8 digits: one engine plus argmax, the
    smallest design hwgen builds (~200 LUT4, synthesized in ~4 s)."""
    rng = np.random.default_rng(3)
    layers = [ir.Flatten("flatten0"),
              ir.AdderDense("dense0", weight=rng.integers(-8, 8, size=(2, 64))),
              ir.Requant("requant0", mult=np.array([-1, -1]), bias=np.array([0, 0]), shift=0, out_bits=10,
                         relu=False)]
    return ir.Model(name="tiny", input_shape=(1, 8, 8), input_bits=4, input_scale=1 / 15, layers=layers,
                    classes=["a", "b"])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("sweep-model") / "tiny"
    tiny_model().save(d)
    return d


def spec_of(tiny, **kw):
    return {"sources": [str(tiny)], "foldings": ["auto", "min"], "devices": ["ice40-hx8k", "ecp5-25f"], **kw}


def same(rows):
    return [{k: r.get(k) for k in SAME} for r in rows]


# --------------------------------------------------------------------------- spec and points

@pytest.mark.parametrize("doc, message", [
    ({}, "'sources' is missing"),
    ({"sources": []}, "'sources' must be a non-empty list"),
    ({"sources": ["embedded"], "devics": ["ice40-up5k"]}, "unknown key 'devics'"),
    ({"sources": ["embedded"], "devices": ["xc7a35t"]}, "'devices': unknown device 'xc7a35t'; pick from"),
    ({"sources": ["embedded"], "act_bits": [8, 1]}, "'act_bits': 1 is not a bit width from 2 to 16"),
    ({"sources": ["embedded"], "weight_bits": ["8"]}, "'weight_bits': '8' is not a bit width"),
    ({"sources": ["random:"]}, "is not random:<kind>[:<seed>]"),
    ({"sources": ["random:adder:x"]}, "is not random:<kind>[:<seed>]"),
    ({"sources": ["no/such/model.pt"]}, "'sources': no checkpoint or integer model at"),
    ({"sources": ["embedded"], "foldings": ["fast"]}, "'foldings': 'fast' is neither a preset"),
    ({"sources": ["embedded"], "foldings": [{"conv1": {"pe": 0}}]},
     "'foldings' of 'conv1': pe=0 must be a positive integer"),
    ({"sources": ["embedded"], "folding": {"n": {"conv1": {"speed": 2}}}, "foldings": ["n"]},
     "'folding.n' of 'conv1': unknown keys ['speed']; use 'pe', 'simd', 'weights', 'overlap', 'lanes'"),
    ({"sources": ["embedded"], "foldings": [{"conv1": {"weights": "flash"}}]},
     "'foldings' of 'conv1': weights='flash'; use 'rom'"),
    ({"sources": ["embedded"], "synth": {"sed": 1}}, "'synth': unknown option 'sed'"),
    ({"sources": ["embedded"], "synth": {"bitstream": "no"}}, "'synth.bitstream': 'no' is not a bool"),
])
def test_spec_errors_are_one_line(doc, message):
    with pytest.raises(SpecError) as e:
        points(doc)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_spec_file_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('sources = ["embedded"\ndevices = 3\n')
    with pytest.raises(SpecError, match=r"bad.toml: not valid TOML") as e:
        load_spec(bad)
    assert "\n" not in str(e.value)
    wrong = tmp_path / "s.toml"
    wrong.write_text('sources = ["embedded"]\ndevices = ["ice40-up6k"]\n')
    with pytest.raises(SpecError, match=r"s.toml: 'devices': unknown device 'ice40-up6k'"):
        load_spec(wrong)
    with pytest.raises(SpecError, match="a sweep spec is a .toml file"):
        load_spec(Path(__file__))


def test_example_spec_and_points(tiny, tmp_path):
    spec = load_spec(ROOT / "benchmarks/sweep_example.toml")
    pts = points(spec)
    embedded = [p for p in pts if p["source"] == "embedded"]
    assert len(embedded) == 2 * 3 * 2  # act_bits × foldings × devices
    assert [p["point"] for p in pts] == list(range(len(pts)))
    assert len({p["key"] for p in pts}) == len(pts) == len({p["dir"] for p in pts})
    assert points(spec) == pts  # stable

    # An integer model is already quantized: the bit-width axes collapse onto one point.
    spec = spec_of(tiny, act_bits=[8, 4], weight_bits=[8, 4])
    pts = points(spec)
    assert len(pts) == 4 and all(p["act_bits"] is None for p in pts)
    # A relative path is read from the spec file's folder; changing the model's bytes is a new point.
    copy = tmp_path / "copy"
    m = tiny_model()
    m.save(copy)
    (tmp_path / "s.toml").write_text('sources = ["copy"]\n')
    key = points(load_spec(tmp_path / "s.toml"))[0]["key"]
    m.save(copy)
    assert points(load_spec(tmp_path / "s.toml"))[0]["key"] == key  # same bytes, same point
    m.layers[1].weight[0, 0] += 1
    m.save(copy)
    assert points(load_spec(tmp_path / "s.toml"))[0]["key"] != key


# --------------------------------------------------------------------------- running

def test_local_and_dask_give_the_same_table(tiny, tmp_path):
    from dask.distributed import LocalCluster

    spec = spec_of(tiny)
    local = run_sweep(spec, tmp_path / "local", jobs=2, progress=False)
    assert [r["status"] for r in local] == ["ok"] * 4, [r["message"] for r in local]
    for r in local:
        assert r["luts"] > 50 and r["ffs"] > 0 and r["fmax_mhz"] > 20 and r["cycles_per_image"] > 0
        assert r["images_per_s"] == pytest.approx(r["fmax_mhz"] * 1e6 / r["cycles_per_image"], abs=0.1)
        assert 0 <= r["golden_accuracy"] <= 1
        assert (tmp_path / "local" / r["build_dir"] / "synth" / r["device"] / "report.json").is_file()
    auto, minimal = local[0], local[2]  # same device, folding auto and min
    assert minimal["cycles_per_image"] > auto["cycles_per_image"]

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster:
        remote = run_sweep(spec, tmp_path / "dask", dask_address=cluster.scheduler_address, progress=False)
    assert same(remote) == same(local)

    table = (tmp_path / "local" / "sweep.csv").read_text().splitlines()
    assert table[0].split(",")[:8] == sweep.COLUMNS[:8] and len(table) == 5
    assert (tmp_path / "local" / "sweep.md").read_text().count("| ok |") == 4
    assert len(read_results(tmp_path / "local")) == 4


def test_unreachable_dask_scheduler_and_bad_jobs_are_one_line(tiny, tmp_path, monkeypatch):
    with pytest.raises(sweep.SweepError, match="jobs must be a whole number of at least 1, not 0"):
        run_sweep(spec_of(tiny), tmp_path, jobs=0, progress=False)
    monkeypatch.setattr(sweep, "DASK_CONNECT_TIMEOUT", "1s")
    with pytest.raises(sweep.SweepError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        run_sweep(spec_of(tiny), tmp_path, dask_address="tcp://127.0.0.1:9", progress=False)


def test_killed_sweep_finishes_without_redoing_points(tiny, tmp_path):
    spec = spec_of(tiny, foldings=["min"])  # two points, ~4 s each
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    out = tmp_path / "out"
    code = ("import sys; from hwgen.sweep import run_sweep, load_spec; "
            "run_sweep(load_spec(sys.argv[1]), sys.argv[2], jobs=1, progress=False)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "spec.json"), str(out)],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while len(read_results(out)) < 1:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no point finished in 120 s"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the sweep and the Yosys / nextpnr it started
        proc.wait()
        proc.stderr.close()  # an open pipe is a ResourceWarning, an error under filterwarnings
    before = read_results(out)
    assert len(before) == 1, "the sweep finished before it could be killed"
    assert not (out / "sweep.csv").exists()
    stamps = {r["key"]: (out / r["build_dir"] / "manifest.json").stat().st_mtime_ns for r in before}

    with open(out / sweep.RESULTS, "a") as f:
        f.write('{"key": "torn')  # a row cut off by the kill: dropped, the next row starts clean
    rows = run_sweep(spec, out, jobs=1, progress=False)
    assert [r["status"] for r in rows] == ["ok"] * 2
    assert all(json.loads(line) for line in (out / sweep.RESULTS).read_text().splitlines())
    after = read_results(out)
    assert len(after) == 2 and after[:1] == before  # appended, finished rows untouched
    assert all(r["attempt"] == 1 for r in after)
    for key, stamp in stamps.items():
        row = next(r for r in rows if r["key"] == key)
        assert (out / row["build_dir"] / "manifest.json").stat().st_mtime_ns == stamp  # not rebuilt
    assert not list((out / "points").glob(".*.building-*"))

    again = run_sweep(spec, out, jobs=1, progress=False)  # nothing left to do
    assert same(again) == same(rows) and len(read_results(out)) == 2


def test_errors_are_retried_and_does_not_fit_is_final(tiny, tmp_path, monkeypatch):
    tiny_dev = dataclasses.replace(DEVICES["ice40-hx8k"], name="ice40-tiny", luts=64)
    monkeypatch.setitem(DEVICES, "ice40-tiny", tiny_dev)
    spec = spec_of(tiny, foldings=["min", {"dense9": {"pe": 2}}], devices=["ice40-tiny"])
    rows = run_sweep(spec, tmp_path, jobs=1, progress=False)
    fit, bad = rows
    assert fit["status"] == "does-not-fit" and "logic cells, ice40-tiny has 64" in fit["message"]
    assert fit["cycles_per_image"] > 0 and fit["luts"] is None
    assert bad["status"] == "error" and bad["message"].startswith("build: ModelError:") and "'dense9'" in bad["message"]
    assert "\n" not in bad["message"]

    assert sweep.summary(rows) == "2 points: 1 does-not-fit, 1 error (run again to retry the errors)"
    rows = run_sweep(spec, tmp_path, jobs=1, progress=False)
    assert [r["attempt"] for r in rows] == [1, 2]  # the error ran again, the does-not-fit did not
    assert len(read_results(tmp_path)) == 3


def test_random_source_without_kind_argument(tmp_path, monkeypatch):
    """Until random_digits_model takes ``kind``, random:adder builds and other kinds fail clearly."""
    calls = []

    def old_style(seed=0, calibration=None):
        calls.append(seed)
        return tiny_model()

    monkeypatch.setattr(sweep, "_random_generator", lambda: old_style)
    spec = {"sources": ["random:adder:5", "random:shift"], "foldings": ["min"], "devices": ["ice40-hx8k"]}
    assert [p["act_bits"] for p in points(spec)] == [None, None]
    from hwgen import synth

    monkeypatch.setattr(synth, "synthesize", lambda *a, **k: {"luts": 1, "fmax_mhz": 100.0})  # build only
    rows = run_sweep(spec, tmp_path, jobs=1, progress=False)
    assert calls == [5]
    assert rows[0]["status"] == "ok"
    assert rows[0]["images_per_s"] == pytest.approx(100e6 / rows[0]["cycles_per_image"], abs=0.1)
    assert rows[1]["status"] == "error"
    assert "random_digits_model has no 'kind' argument in this hwgen yet" in rows[1]["message"]


def test_random_winograd_adder_builds_at_min_folding(tmp_path, monkeypatch):
    """A hyphenated kind is a random source, and the smallest folding of a Winograd tile engine
    is one PE without the second tile buffer (it has no simd)."""
    spec = {"sources": ["random:winograd-adder:2"], "foldings": ["min"], "devices": ["ice40-hx8k"]}
    from hwgen import synth

    monkeypatch.setattr(synth, "synthesize", lambda *a, **k: {"luts": 1, "fmax_mhz": 100.0})  # build only
    rows = run_sweep(spec, tmp_path, jobs=1, progress=False)
    assert rows[0]["status"] == "ok", rows[0]
    manifest = json.loads(next(tmp_path.rglob("manifest.json")).read_text())
    engines = {e["name"]: e for e in manifest["engines"]}
    assert engines["conv1"]["kind"] == "winograd_adder_conv2d"
    assert (engines["conv1"]["pe"], engines["conv1"]["overlap"]) == (1, 0)


def test_a_sweep_folds_every_key_that_fold_accepts():
    """Sweep specs and ``--fold`` share one parser: every key, the same values."""
    from hwgen.hw.spec import FOLDING_KEYS, parse_fold_items

    table = {"conv1": {"pe": 2, "simd": 3, "weights": "const"}, "wconv": {"pe": 1, "overlap": 0},
             "pool1": {"lanes": 2}}
    pts = points({"sources": ["embedded"], "foldings": [table]})
    assert pts[0]["folding_spec"] == table
    assert table == parse_fold_items(["conv1=pe:2,simd:3,weights:const", "wconv=pe:1,overlap:0",
                                      "pool1=lanes:2"])
    assert {k for fold in table.values() for k in fold} == set(FOLDING_KEYS)
