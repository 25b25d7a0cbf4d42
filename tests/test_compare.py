"""`hwgen compare`: the families side by side, from real builds, simulations and syntheses."""

import json
from pathlib import Path

import pytest

from hwgen.compare import FAMILIES, CompareError, compare, format_table, markdown_table
from test_cli import assert_user_error, hwgen


def test_bad_requests_are_one_line(tmp_path):
    with pytest.raises(CompareError, match="unknown family 'capsule'"):
        compare(tmp_path / "c", ["adder", "capsule"])
    with pytest.raises(CompareError, match="named twice"):
        compare(tmp_path / "c", ["adder", "adder"])
    assert_user_error(hwgen("compare", "--out", tmp_path / "c", "--archs", "adder,nope"), "unknown family 'nope'")
    assert_user_error(hwgen("compare", "--out", tmp_path / "c", "--device", "xc7"), "unknown device 'xc7'")
    assert not (tmp_path / "c" / "compare.json").exists()


def test_random_adder_vs_conv_on_hx8k(tmp_path):
    """Two families with random weights: real builds, Icarus against the golden model, real
    synthesis; the LUT ratio is the adder version's LUTs over the multiplier version's."""
    doc = compare(tmp_path / "c", ["conv", "adder"], device="ice40-hx8k", source="random", images=2,
                  progress=False)
    rows = {r["family"]: r for r in doc["rows"]}
    assert set(rows) == {"conv", "adder"}
    for row in rows.values():
        assert row["status"] == "ok", row["status"]
        assert row["sim"]["mismatches"] == 0 and row["sim"]["images"] == 2
        assert row["luts"] > 0 and row["fmax_mhz"] > 0 and row["images_per_s"] > 0
        report = json.loads(Path(row["synth_report"]).read_text())  # every figure traces to a tool report
        assert report["luts"] == row["luts"] and report["fmax_mhz"] == row["fmax_mhz"]
    assert rows["conv"]["luts_vs_conv"] == 1.0
    assert rows["adder"]["luts_vs_conv"] == round(rows["adder"]["luts"] / rows["conv"]["luts"], 3)
    on_disk = json.loads((tmp_path / "c" / "compare.json").read_text())
    assert on_disk["rows"] == json.loads(json.dumps(doc["rows"]))
    assert "| adder |" in markdown_table(doc) and "× the multiplier version's" in format_table(doc)


def _stub_synthesis(monkeypatch, no_fit=()):
    """Replace Yosys/nextpnr (minutes per Winograd build) by a stand-in that answers from the
    build's manifest: per-engine LUTs ``100 × (engine index + 1)`` (the first engine, conv1, 100,
    the third, conv2, 300), Fmax 50 MHz; leaves the summary in the build's report.json as
    `hwgen synth` does; a build named in ``no_fit`` gets the synthesis's "does not fit" error."""
    from hwgen import synth

    def fake(build_dir, device_name, seed=1, dsp=True, bitstream=False, **_):
        build = Path(build_dir)
        if build.name in no_fit:
            raise synth.SynthError(f"design needs 9999 logic cells, {device_name} has 7680; "
                                   f"fold more or pick a larger device")
        engines = json.loads((build / "manifest.json").read_text())["engines"]
        modules = {e["name"]: {"luts": 100 * (i + 1), "ffs": 10, "carry": 1, "brams": 0, "dsps": 0,
                               "lut4_equivalent": 100 * (i + 1)} for i, e in enumerate(engines)}
        luts = sum(m["luts"] for m in modules.values())
        folder = build / "synth" / device_name
        folder.mkdir(parents=True, exist_ok=True)
        rep = {"device": device_name, "luts": luts, "lut4_equivalent": luts, "ffs": 10 * len(engines), "carry": 7,
               "brams": 0, "dsps": 0, "logic_cells": luts + 5, "logic_cells_available": 7680, "fmax_mhz": 50.0,
               "modules": modules, "folder": str(folder)}
        (folder / "report.json").write_text(json.dumps(rep))
        (build / "report.json").write_text(json.dumps({"synth": {device_name: rep}}))
        return rep

    monkeypatch.setattr(synth, "synthesize", fake)


def test_random_direct_vs_winograd_adder(tmp_path, monkeypatch):
    """adder and winograd-adder with random weights, verified on Icarus, synthesis stubbed: the
    table has the winograd-adder row, and compare.json, compare.md and the report set the two
    conv layers side by side — 2.25× fewer absolute differences for the Winograd form of a 3×3
    pad-1 layer with an even output, each layer's engine LUTs in both builds, Fmax, accuracy."""
    _stub_synthesis(monkeypatch)
    doc = compare(tmp_path / "c", ["adder", "winograd-adder"], source="random", images=2, progress=False)
    rows = {r["family"]: r for r in doc["rows"]}
    assert rows["winograd-adder"]["status"] == "ok" and rows["winograd-adder"]["sim"]["mismatches"] == 0
    assert rows["winograd-adder"]["model"] == "random-digits-winograd-adder-0"
    assert "| winograd-adder |" in markdown_table(doc)
    sec = doc["winograd_vs_direct"]
    assert (sec["direct"], sec["winograd"]) == ("adder", "winograd-adder")
    assert [l["layer"] for l in sec["layers"]] == ["conv1", "conv2"]
    for layer in sec["layers"]:
        assert layer["absdiff"]["ratio"] == 2.25 and layer["add"]["ratio"] > 1
        assert layer["direct_engine"] == layer["layer"]
    assert [l["luts"]["winograd"] for l in sec["layers"]] == [100, 300]  # modules of the stand-in, by engine
    assert sec["builds"]["winograd"]["fmax_mhz"] == 50.0
    assert sec["builds"]["winograd"]["accuracy"] == rows["winograd-adder"]["integer_accuracy"]
    assert json.loads((tmp_path / "c" / "compare.json").read_text())["winograd_vs_direct"] == \
        json.loads(json.dumps(sec))
    md = (tmp_path / "c" / "compare.md").read_text()
    assert "## Direct vs Winograd per layer: adder vs winograd-adder" in md
    assert "| conv1 | 4,608 | 2,048 | 2.25 |" in md and "## Direct vs Winograd builds" in md
    assert "Direct vs Winograd per layer" in (tmp_path / "c" / "report.md").read_text()
    assert "Direct vs Winograd per layer" in (tmp_path / "c" / "report.html").read_text()
    assert "2.25× fewer absolute differences" in format_table(doc)


def test_winograd_adder_that_does_not_fit_is_a_row(tmp_path, monkeypatch):
    """A Winograd build that does not fit the device is a "does not fit" row; the per-layer
    table still has the op counts, its LUTs are unknown; without the adder family, no section."""
    _stub_synthesis(monkeypatch, no_fit=("winograd-adder",))
    doc = compare(tmp_path / "c", ["adder", "winograd-adder"], source="random", simulator=None, progress=False)
    row = doc["rows"][1]
    assert row["status"].startswith("does not fit: design needs 9999 logic cells") and row.get("luts") is None
    sec = doc["winograd_vs_direct"]
    assert sec["layers"][0]["absdiff"]["ratio"] == 2.25
    assert sec["layers"][0]["luts"] == {"direct": 100, "winograd": None, "ratio": None}
    assert sec["builds"]["winograd"]["fmax_mhz"] is None
    md = markdown_table(doc)
    assert "| winograd-adder | " in md and "does not fit" in md and "| conv1 | 4,608 | 2,048 | 2.25 |" in md
    alone = compare(tmp_path / "w", ["winograd-adder"], source="random", simulator=None, progress=False)
    assert alone["winograd_vs_direct"] is None and "Direct vs Winograd" not in markdown_table(alone)


@pytest.mark.slow
def test_cli_compare_shipped_models(tmp_path):
    """The five shipped models of the digits shape on the default device (HX8K), as a user
    runs it: all fit, all are verified on Icarus, all paced to one throughput where their
    foldings allow (the Winograd tile engine's slowest folding is faster than the pace), and the
    direct and Winograd AdderNet are set side by side per layer."""
    proc = hwgen("compare", "--out", tmp_path / "c", "--quiet")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads((tmp_path / "c" / "compare.json").read_text())
    assert [r["family"] for r in doc["rows"]] == list(FAMILIES) == ["conv", "adder", "shift", "shiftadd",
                                                                    "winograd-adder"]
    for row in doc["rows"]:
        assert row["integer_accuracy"] > 0.9 and row["status"] == "ok"
        assert row["cycles_per_image"] <= doc["target_cycles"]
    assert len({r["cycles_per_image"] for r in doc["rows"] if r["family"] != "winograd-adder"}) == 1
    sec = doc["winograd_vs_direct"]
    assert [l["layer"] for l in sec["layers"]] == ["conv0", "conv1"]
    for layer in sec["layers"]:
        assert layer["absdiff"]["ratio"] == 2.25 and layer["luts"]["direct"] > 0 and layer["luts"]["winograd"] > 0
    assert "LUT4 =" in proc.stdout and "fewer absolute differences" in proc.stdout
