"""The report: report.json schema, Markdown, self-contained HTML rendered in headless Chromium."""

import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from fixtures_hw import fixture_model, write_build
from hwgen import report

DEV = "ice40-up5k"
MODULES = {"fc": {"luts": 120, "ffs": 40, "brams": 0, "dsps": 0}, "(glue)": {"luts": 12, "ffs": 4, "brams": 0, "dsps": 0}}


def synthesized_build(path, luts=132):
    """A fixture build folder with the synthesis summary `hwgen synth` would merge into report.json."""
    build = write_build(path, images=4)
    summary = {"luts": luts, "ffs": 44, "carry": 10, "brams": 0, "dsps": 0, "logic_cells": luts + 8,
               "logic_cells_available": 5280, "fmax_mhz": 80.5, "freq_target_mhz": 24.0, "modules": MODULES}
    (build / "report.json").write_text(json.dumps({"synth": {DEV: summary}}))
    (build / "synth" / DEV).mkdir(parents=True)
    (build / "synth" / DEV / "report.json").write_text(json.dumps({"device": DEV, "family": "ice40", **summary}))
    manifest = json.loads((build / "manifest.json").read_text())
    manifest["golden_accuracy"] = 0.75
    (build / "manifest.json").write_text(json.dumps(manifest))
    return build


def test_pareto_front():
    pts = [(100, 0.9), (200, 0.95), (150, 0.85), (300, 0.95), (50, 0.5)]
    assert report.pareto_front(pts) == [4, 0, 1]


def test_single_build_schema_and_sources(tmp_path):
    build = synthesized_build(tmp_path / "b")
    doc = report.write_report(build, build)
    on_disk = json.loads((build / "report.json").read_text())
    assert on_disk["schema"] == "hwgen-report" and on_disk["version"] == 1
    assert on_disk["synth"][DEV]["luts"] == 132  # the synth summary kept in the same file survives
    (v,) = on_disk["variants"]
    assert v["name"] == "fixture" and v["accuracy"]["value"] == 0.75
    assert "manifest.json" in v["accuracy"]["source"] and "report.json" in v["synth"]["source"]
    assert v["synth"]["modules"] == MODULES
    eo = v["energy_ops"]
    assert eo["total_pj"] > 0 and "op_energy" in eo["source"] and eo["constants"]["add"].startswith("M. Horowitz")
    assert v["energy_fpga"] is None and any("FPGA energy" in n for n in v["notes"])  # no waveform yet
    ids = {f["id"] for f in on_disk["figures"]}
    assert {"luts_per_layer", "energy_ops", "pareto"} <= ids
    for f in on_disk["figures"]:
        assert f["sources"] and (build / f["file"]).is_file()
    md = (build / "report.md").read_text()
    assert "Sources:" in md and "| fixture |" in md and "estimates" in md
    assert doc["variants"][0]["name"] == "fixture"


def test_html_is_self_contained(tmp_path):
    build = synthesized_build(tmp_path / "b")
    report.write_report(tmp_path / "out", build)
    html = (tmp_path / "out" / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3
    assert not re.search(r"<script|<link|src=\"(?!data:)|url\(", html)  # no external asset of any kind


def test_compared_variants(tmp_path):
    a = synthesized_build(tmp_path / "adder", luts=132)
    variants = [
        {"name": "adder", "build_dir": str(a)},
        {"name": "conv", "accuracy": 0.80, "synth": {"device": DEV, "logic_cells": 400, "luts": 390,
                                                    "source": "given"}},
        {"name": "shift", "accuracy": 0.70, "synth": {"device": DEV, "logic_cells": 600, "luts": 580,
                                                     "source": "given"}},
    ]
    doc = report.write_report(tmp_path / "cmp", variants)
    assert [v["name"] for v in doc["variants"]] == ["adder", "conv", "shift"]
    assert doc["variants"][1]["accuracy"] == {"value": 0.8, "images": None, "source": "given by the caller"}
    md = (tmp_path / "cmp" / "report.md").read_text()
    assert "| conv | 80.00 | 400 |" in md
    with pytest.raises(report.ReportError):
        report.write_report(tmp_path / "none", [])
    with pytest.raises(report.ReportError, match="hwgen build"):
        report.write_report(tmp_path / "x", tmp_path / "missing")


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="headless Chromium is not installed (Debian: apt-get install chromium)")
def test_html_renders_in_headless_chromium(tmp_path):
    from PIL import Image

    build = synthesized_build(tmp_path / "b")
    out = tmp_path / "out"
    report.write_report(out, build)
    png = tmp_path / "shot.png"
    proc = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={png}",
                           "--window-size=1200,1600", (out / "report.html").resolve().as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert png.is_file(), proc.stderr[-2000:]
    img = np.asarray(Image.open(png).convert("RGB")).astype(int)
    assert img.shape[:2] == (1600, 1200)
    colours = {tuple(c) for c in img[::4, ::4].reshape(-1, 3)}
    assert len(colours) > 20  # text, tables, plots — not a blank page
    # The bar colour of the LUT and energy plots (#4C72B0) covers a real area: the PNG plots drew.
    bar = (np.abs(img - np.array([0x4C, 0x72, 0xB0])).sum(axis=2) < 30).sum()
    assert bar > 2000, f"only {bar} plot-coloured pixels"
    # Below the page title the picture is not white.
    assert (img[200:, :, :] < 240).any(axis=2).mean() > 0.02
