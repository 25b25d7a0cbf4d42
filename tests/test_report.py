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
    assert [f["id"] for f in on_disk["figures"]][:3] == ["headline", "pareto", "luts_per_engine"]
    assert {"energy_ops"} <= ids
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


def test_html_leads_with_the_headline(tmp_path):
    """The headline figure and its short table come first, the provenance is folded away and
    linked from its figure, and the per-layer detail follows the pictures."""
    build = synthesized_build(tmp_path / "b")
    report.write_report(tmp_path / "out", build)
    page = (tmp_path / "out" / "report.html").read_text()
    figures = re.findall(r'<figure id="fig-([a-z_]+)"', page)
    assert figures[:3] == ["headline", "pareto", "luts_per_engine"]
    at = page.index
    assert at('id="fig-headline"') < at('id="table-headline"') < at('id="fig-pareto"')
    assert at('id="fig-luts_per_engine"') < at('id="detail"') < at("operations and energy")
    for fid in figures:  # every figure links to its sources, which are folded in <details>
        assert f'<a href="#src-{fid}">sources</a>' in page
        assert f'<details class="src" id="src-{fid}">' in page
    # One per figure, and per table: the summary, the operations per layer.
    assert page.count("<details") == page.count("</details>") == len(figures) + 2
    assert "<li>fixture: accuracy" in page  # sources are kept, not dropped
    md = (tmp_path / "out" / "report.md").read_text()
    assert md.index("## Headline") < md.index("## Summary") and "\n\n\n" not in md


def test_html_escapes_what_it_shows(tmp_path):
    variants = [{"name": "<b>x</b>", "accuracy": 0.5,
                 "synth": {"device": DEV, "logic_cells": 10, "luts": 9, "source": "a & b"}}]
    report.write_report(tmp_path / "out", variants)
    page = (tmp_path / "out" / "report.html").read_text()
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page and "a &amp; b" in page


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _screenshot(html, png, width, height):
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={png}",
           "--hide-scrollbars", f"--window-size={width},{height}", html.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert png.is_file(), proc.stderr[-2000:]
    from PIL import Image

    return np.asarray(Image.open(png).convert("RGB")).astype(int)


def _colour_pixels(img, colour: str) -> int:
    rgb = np.array([int(colour[k:k + 2], 16) for k in (1, 3, 5)])
    return int((np.abs(img - rgb).sum(axis=2) < 30).sum())


@pytest.mark.skipif(_chromium() is None,
                    reason="headless Chromium is not installed (Debian: apt-get install chromium)")
def test_html_renders_in_headless_chromium(tmp_path):
    """The first screen (1280×800) shows the headline figure: the five panels' bars in the
    colours of the variants, and no other figure is above it."""
    a = synthesized_build(tmp_path / "adder", luts=132)
    variants = [{"name": "adder", "build_dir": str(a)},
                {"name": "conv", "accuracy": 0.80, "cycles_per_image": 17,
                 "synth": {"device": DEV, "logic_cells": 400, "luts": 390, "fmax_mhz": 60.0,
                           "source": "given",
                           "modules": {"fc": {"luts": 300}, "(glue)": {"luts": 90}}}}]
    out = tmp_path / "out"
    report.write_report(out, variants)
    img = _screenshot(out / "report.html", tmp_path / "shot.png", 1280, 800)
    assert img.shape[:2] == (800, 1280)
    colours = {tuple(c) for c in img[::4, ::4].reshape(-1, 3)}
    assert len(colours) > 20  # text, a table, a plot — not a blank page
    # Both variants' bars of the headline figure cover a real area of the first screen.
    first, second = (_colour_pixels(img, c) for c in report.FAMILY_COLOURS[:2])
    assert first > 1500 and second > 1500, (first, second)
    # The headline table is on the first screen too: its header's background colour (#eef).
    assert _colour_pixels(img, "#EEEEFF") > 500
    # The whole page: the stacked LUT bars (tab20) and the detail are drawn below.
    full = _screenshot(out / "report.html", tmp_path / "full.png", 1280, 4000)
    assert (full[800:, :, :] < 240).any(axis=2).mean() > 0.02


def _fake_build(path, model, modules, fmax, accuracy):
    """A build folder of ``model`` as `hwgen build` + `hwgen synth` leave it (no Verilog): the real
    manifest of its accelerator (engines, folding), a synthesis summary with per-engine LUTs."""
    from hwgen.hw.top import Accelerator, manifest

    path.mkdir(parents=True)
    model.save(path)
    top = Accelerator(model)
    for unit in (top, *top.engines):  # measured, never elaborated
        unit._MustUse__silence = True
    man = {**manifest(top), "device": DEV, "golden_accuracy": accuracy}
    (path / "manifest.json").write_text(json.dumps(man))
    luts = sum(m["luts"] for m in modules.values())
    summary = {"luts": luts, "ffs": 10, "carry": 5, "brams": 1, "dsps": 0, "logic_cells": luts + 20,
               "logic_cells_available": 5280, "fmax_mhz": fmax, "modules": modules}
    (path / "report.json").write_text(json.dumps({"synth": {DEV: summary}}))
    return path


def test_winograd_vs_direct_section(tmp_path):
    """The direct 3×3 AdderNet and its Winograd form side by side per layer: op counts of both
    forms (2.25× fewer absolute differences for a 3×3 pad-1 layer with an even output), the
    layer's engine LUTs in each build, and the two builds' accuracy and Fmax."""
    from hwgen.testmodels import random_digits_model

    mod = lambda n: {"luts": n, "ffs": 1, "brams": 0, "dsps": 0}  # noqa: E731
    adder = _fake_build(tmp_path / "adder", random_digits_model(0, kind="adder"),
                        {"conv1": mod(500), "conv2": mod(900), "fc": mod(300)}, 60.0, 0.5)
    wino = _fake_build(tmp_path / "wino", random_digits_model(0, kind="winograd-adder"),
                       {"conv1": mod(700), "conv2": mod(1200), "fc": mod(310)}, 50.0, 0.25)
    doc = report.write_report(tmp_path / "cmp", [{"name": "adder", "build_dir": str(adder)},
                                                 {"name": "winograd-adder", "build_dir": str(wino)}],
                              winograd_pair=("adder", "winograd-adder"))
    sec = json.loads((tmp_path / "cmp" / "report.json").read_text())["winograd_vs_direct"]
    assert sec == json.loads(json.dumps(doc["winograd_vs_direct"]))
    assert (sec["direct"], sec["winograd"]) == ("adder", "winograd-adder")
    assert [l["layer"] for l in sec["layers"]] == ["conv1", "conv2"]
    c1, c2 = sec["layers"]
    assert c1["absdiff"] == {"direct": 8 * 8 * 8 * 9, "winograd": 4 * 4 * 8 * 16, "ratio": 2.25}
    assert c2["absdiff"]["ratio"] == 2.25 and c2["add"]["direct"] == 4 * 4 * 16 * (9 * 8 - 1)
    assert c1["luts"] == {"direct": 500, "winograd": 700, "ratio": round(500 / 700, 4)}
    assert c2["direct_engine"] == "conv2" and c2["folding"]["winograd"]["pe"] >= 1
    assert c2["cycles_per_image"]["winograd"] > 0 and c2["cycles_per_image"]["direct"] > 0
    b = sec["builds"]
    assert (b["direct"]["fmax_mhz"], b["winograd"]["fmax_mhz"]) == (60.0, 50.0)
    assert (b["direct"]["accuracy"], b["winograd"]["accuracy"]) == (0.5, 0.25)
    assert "winograd_vs_direct" in sec["source"] and "modules" in sec["source"]
    md = (tmp_path / "cmp" / "report.md").read_text()
    assert "## Direct vs Winograd per layer: adder vs winograd-adder" in md
    assert "| conv1 | 4,608 | 2,048 | 2.25 |" in md
    assert "Direct vs Winograd per layer" in (tmp_path / "cmp" / "report.html").read_text()
    # Not asked for: the key is there, null; an unknown pair is a one-line error.
    plain = report.write_report(tmp_path / "plain", wino)
    assert plain["winograd_vs_direct"] is None
    with pytest.raises(report.ReportError, match="not two of the variants"):
        report.write_report(tmp_path / "bad", [adder, wino], winograd_pair=("adder", "winograd"))
