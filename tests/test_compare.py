"""`hwgen compare`: the families side by side, from real builds, simulations and syntheses."""

import json

import pytest

from hwgen.compare import CompareError, compare, format_table, markdown_table
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
        report = json.loads(open(row["synth_report"]).read())  # every figure traces to a tool report
        assert report["luts"] == row["luts"] and report["fmax_mhz"] == row["fmax_mhz"]
    assert rows["conv"]["luts_vs_conv"] == 1.0
    assert rows["adder"]["luts_vs_conv"] == round(rows["adder"]["luts"] / rows["conv"]["luts"], 3)
    on_disk = json.loads((tmp_path / "c" / "compare.json").read_text())
    assert on_disk["rows"] == json.loads(json.dumps(doc["rows"]))
    assert "| adder |" in markdown_table(doc) and "× the multiplier version's" in format_table(doc)


@pytest.mark.slow
def test_cli_compare_shipped_models(tmp_path):
    """The four shipped models of the digits shape on the default device (HX8K), as a user
    runs it: all fit, all are verified on Icarus, all paced to one throughput."""
    proc = hwgen("compare", "--out", tmp_path / "c", "--quiet")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads((tmp_path / "c" / "compare.json").read_text())
    assert [r["family"] for r in doc["rows"]] == ["conv", "adder", "shift", "shiftadd"]
    for row in doc["rows"]:
        assert row["integer_accuracy"] > 0.9 and row["status"] == "ok"
    assert len({r["cycles_per_image"] for r in doc["rows"]}) == 1
    assert "LUT4 =" in proc.stdout
