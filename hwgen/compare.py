"""``hwgen compare``: one network shape built as several arithmetic families, side by side.

Every variant is the digits network of :mod:`hwgen.nn.models` (two 3×3 conv blocks and a dense
layer) with its weight layers of one family:

==================  ===========================================================================
``conv``            multiplier conv / dense: the baseline (MAC processing elements)
``adder``           AdderNet: ``-Σ|x - w|`` (l1 processing elements)
``shift``           DeepShift: weights ``±2**p`` (barrel-shifter processing elements)
``shiftadd``        ShiftAddNet: a shift layer followed by an adder layer
``winograd-adder``  Winograd-AdderNet: the adder network with F(2×2, 3×3) Winograd convs
                    (:class:`~hwgen.hw.winograd.WinogradEngine`, folded by ``pe`` and ``overlap``
                    only: its slowest folding may still be faster than the common pace)
==================  ===========================================================================

Each variant is quantized, built (:func:`hwgen.flow.build`), optionally simulated against the
golden model (:func:`hwgen.simulate.simulate`) and synthesized for one device
(:func:`hwgen.synth.synthesize`); the table holds the figures of the tools' own reports, the
golden model's accuracy on the 360 test digits, and the ratio of each variant's LUTs to the
multiplier version's.  Models come from the checkpoints shipped with hwgen (``shipped``,
the default), from training now (``train``) or from random weights (``random``: hardware
cost only, the accuracy is meaningless).

Everything lands in ``OUT/``: one build folder per variant, ``compare.json`` (the rows) and
``compare.md`` (the table), and ``report.json``/``report.md``/``report.html``
(:mod:`hwgen.report`: per-engine LUTs, energy breakdowns, accuracy against LUTs).

When both ``adder`` and ``winograd-adder`` are compared, the direct and the Winograd form of
the same AdderNet are also set side by side per layer (``winograd_vs_direct``: absolute
differences and additions per inference of each form, the LUTs of each layer's engine, and the
two builds' accuracy, LUTs and Fmax), in ``compare.json``, ``compare.md`` and the report.

``compare.json`` (``"format": "hwgen-compare", "version": 1``)::

    {
      "format": "hwgen-compare", "version": 1,
      "device": str, "source": "shipped" | "train" | "random",
      "cycles": "match" | "auto" | int, "target_cycles": int | null, "dsp": bool, "seed": int,
      "baseline": "conv", "families": [str],
      "rows": [{                       # one per family, in the order of "families"
        "family", "model", "source": str, "status": "ok" | "MISMATCH" | "does not fit: …" | "synthesis failed: …",
        "float_accuracy", "integer_accuracy": float | null, "cycles_per_image", "weights": int,
        "build": str, "sim": {"simulator", "images", "mismatches", "passed"} (with a simulator),
        "luts", "lut4_equivalent", "ffs", "carry", "brams", "dsps", "logic_cells",
        "logic_cells_available": int, "fmax_mhz": float | null, "images_per_s": float | null,
        "modules": {engine: {"luts", "ffs", …}}, "synth_report": str      (when it fits),
        "luts_vs_conv", "lut4_equivalent_vs_conv", "ffs_vs_conv", "dsps_vs_conv": float | null,
        "energy_pj_45nm", "energy_pj_fpga": float | null
      }],
      "winograd_vs_direct": {...} | null,
      "seconds": float
    }

``winograd_vs_direct`` is an optional key added within version 1 (a reader that does not know
it loses nothing; ``null`` unless both ``adder`` and ``winograd-adder`` are compared); its
shape is that of the report's section of the same name (:mod:`hwgen.report`, module
docstring): ``direct``/``winograd`` (the families), ``layers`` (per Winograd layer: ``absdiff``
and ``add`` counts ``{"direct", "winograd", "ratio"}`` with ratio = direct / Winograd, ``luts``
of the layer's engine in each build, engine ``cycles_per_image`` and ``folding``), ``builds``
(accuracy, LUTs, logic cells, Fmax, cycles per image of each) and ``source``.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from . import ir
from .errors import HwgenError
from .util import Steps, atomic_write, atomic_write_json

__all__ = ["FAMILIES", "SOURCES", "variant_model", "compare", "format_table", "markdown_table"]

FAMILIES = ("conv", "adder", "shift", "shiftadd", "winograd-adder")
SOURCES = ("shipped", "train", "random")
COMPARE_FORMAT = "hwgen-compare"
COMPARE_VERSION = 1
BASELINE = "conv"
#: The direct and the Winograd form of the AdderNet, set side by side per layer when both are compared.
WINOGRAD_PAIR = ("adder", "winograd-adder")


class CompareError(HwgenError, ValueError):
    """A bad request to :func:`compare`; the message is one line."""


def variant_model(arch: str, source: str = "shipped", seed: int = 0, epochs: int | None = None,
                  workdir: Path | None = None) -> ir.Model:
    """The integer model of family ``arch`` from ``source`` (see the module docstring)."""
    from . import flow

    if source == "random":
        from .testmodels import random_digits_model
        return random_digits_model(seed, kind=arch)
    if source == "shipped":
        from .nn.checkpoint import embedded_checkpoint
        return flow.load_model(embedded_checkpoint(arch))
    if source == "train":
        from .nn.train import train
        ckpt = Path(workdir or ".") / f"{arch}.pt"
        train(arch=arch, epochs=epochs, seed=seed, out=ckpt, progress=False)
        return flow.load_model(ckpt)
    raise CompareError(f"unknown model source {source!r}; pick one of {', '.join(SOURCES)}")


def pace(models) -> int:
    """The common pace of ``models``: the most cycles per image among their automatic foldings."""
    from .hw.top import Accelerator

    worst = 0
    for model in models:
        top = Accelerator(model)
        for unit in (top, *top.engines):  # measured, never elaborated
            unit._MustUse__silence = True
        worst = max(worst, top.cycles_per_image)
    return worst


def _check(archs, source, device_name, simulator):
    from .synth import device

    archs = list(archs)
    bad = [a for a in archs if a not in FAMILIES]
    if bad or not archs:
        raise CompareError(f"unknown family {bad[0]!r}; pick from {', '.join(FAMILIES)}" if bad
                           else "no family to compare")
    if len(set(archs)) != len(archs):
        raise CompareError("a family is named twice")
    if source not in SOURCES:
        raise CompareError(f"unknown model source {source!r}; pick one of {', '.join(SOURCES)}")
    if simulator not in (None, "icarus", "verilator"):
        raise CompareError(f"unknown simulator {simulator!r}; pick icarus, verilator or none")
    device(device_name)  # raises SynthError for an unknown device
    return archs


def compare(out_dir, archs=FAMILIES, device: str = "ice40-hx8k", source: str = "shipped", *,
            simulator: str | None = "icarus", images: int = 4, seed: int = 0, epochs: int | None = None,
            jobs: int = 2, synth_seed: int = 1, cycles="match", dsp: bool = True, progress: bool = True) -> dict:
    """Build, verify and synthesize every family in ``archs``; returns the comparison document.

    ``cycles`` paces the automatic folding of every variant: ``"match"`` (the default) the
    slowest variant's own pace, so that all variants have the same throughput and differ only
    in the cost of their arithmetic; ``"auto"`` each variant its own fastest folding; or a
    number of cycles per image.  The default device, the iCE40 HX8K, has no DSP blocks, so the
    multiplier version pays for its products in LUTs as the others do; on a device with DSPs,
    ``dsp=False`` asks for the same.  ``jobs`` synthesis runs go in parallel (each Yosys / nextpnr run is one process).  A
    variant that does not fit ``device`` gets a row with ``status`` ``"does not fit: …"``; a
    simulation mismatch makes ``status`` ``"MISMATCH"`` (the document says so; it is not an
    exception, so the other variants are still reported).
    """
    from . import flow
    from .simulate import simulate
    from .synth import SynthError, synthesize

    archs = _check(archs, source, device, simulator)
    if not (cycles in ("match", "auto") or (isinstance(cycles, int) and cycles > 0)):
        raise CompareError(f"cycles must be 'match', 'auto' or a positive number of cycles per image, not {cycles!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict] = {}
    t0 = time.perf_counter()

    bar = Steps(progress, len(archs) * (3 if simulator else 2), "compare")
    with bar:
        # Models and builds one after the other: quantizing and elaborating are fast, and
        # training (source="train") is single-threaded and deterministic by design.
        models = {}
        for arch in archs:
            bar.set(f"{arch}: model")
            models[arch] = variant_model(arch, source, seed=seed, epochs=epochs, workdir=out)
        target = pace(models.values()) if cycles == "match" else (None if cycles == "auto" else int(cycles))
        for arch in archs:
            model = models[arch]
            bar.set(f"{arch}: build")
            manifest = flow.build(model, out / arch, device=device, target_cycles=target)
            bar.advance()
            meta = model.meta
            rows[arch] = {
                "family": arch, "model": model.name, "source": source,
                "float_accuracy": meta.get("float_accuracy"),
                "integer_accuracy": manifest.get("golden_accuracy"),
                "cycles_per_image": manifest["cycles_per_image"],
                "weights": _weight_count(model), "build": str(out / arch), "status": "ok",
            }
            if simulator:
                bar.set(f"{arch}: {simulator}")
                # Waves on: the FPGA energy estimate reads their switching activity.
                sim = simulate(out / arch, simulator=simulator, images=images, seed=seed, waves=True)
                rows[arch]["sim"] = {"simulator": simulator, "images": sim["images"],
                                     "mismatches": len(sim["mismatches"]), "passed": bool(sim.get("passed"))}
                if sim["mismatches"] or not sim.get("passed", True):
                    rows[arch]["status"] = "MISMATCH"
                bar.advance()

        def run_synth(arch):
            try:
                return arch, synthesize(out / arch, device, seed=synth_seed, dsp=dsp, bitstream=False), None
            except SynthError as e:
                return arch, None, str(e)

        with ThreadPoolExecutor(max_workers=max(1, int(jobs))) as pool:
            futures = [pool.submit(run_synth, arch) for arch in archs]
            bar.set(f"synthesis for {device}")
            for fut in as_completed(futures):
                arch, rep, err = fut.result()
                row = rows[arch]
                if err is not None:
                    row["status"] = f"does not fit: {err}" if "fold more" in err else f"synthesis failed: {err}"
                else:
                    row.update({k: rep[k] for k in ("luts", "lut4_equivalent", "ffs", "carry", "brams", "dsps",
                                                     "logic_cells", "logic_cells_available", "fmax_mhz")})
                    row["modules"] = rep.get("modules", {})
                    row["images_per_s"] = (rep["fmax_mhz"] * 1e6 / row["cycles_per_image"]
                                           if rep.get("fmax_mhz") else None)
                    row["synth_report"] = str(Path(rep["folder"]) / "report.json")
                bar.advance()

    report = _report(rows, archs, out, device, source)
    base = rows.get(BASELINE, {})
    for row in rows.values():
        for key in ("luts", "lut4_equivalent", "ffs", "dsps"):
            b, v = base.get(key), row.get(key)
            row[f"{key}_vs_{BASELINE}"] = (round(v / b, 3) if b and v is not None else None)
    doc = {"format": COMPARE_FORMAT, "version": COMPARE_VERSION, "device": device, "source": source,
           "cycles": cycles, "target_cycles": target, "dsp": dsp,
           "seed": seed, "baseline": BASELINE, "families": archs,
           "rows": [rows[a] for a in archs], "winograd_vs_direct": report.get("winograd_vs_direct"),
           "seconds": round(time.perf_counter() - t0, 1)}
    atomic_write_json(out / "compare.json", doc)
    text = markdown_table(doc)
    atomic_write(out / "compare.md", lambda f: f.write(text))
    return doc


def _weight_count(model: ir.Model) -> int:
    return int(sum(getattr(layer, "weight").size for layer in model.layers
                   if getattr(layer, "weight", None) is not None))


def _report(rows: dict, archs, out: Path, device: str, source: str) -> dict:
    """``report.json/.md/.html`` of the variants (:func:`hwgen.report.write_report`: plots,
    energy estimates with their sources) and the energy figures copied into the rows."""
    from .report import write_report

    pair = WINOGRAD_PAIR if all(a in archs for a in WINOGRAD_PAIR) else None
    doc = write_report(out, [{"name": arch, "build_dir": rows[arch]["build"]} for arch in archs], device=device,
                       title=f"hwgen compare: {', '.join(archs)} on {device} (models: {source})",
                       winograd_pair=pair)
    for v in doc["variants"]:
        row = rows[v["name"]]
        row["energy_pj_45nm"] = (v.get("energy_ops") or {}).get("total_pj")
        row["energy_pj_fpga"] = (v.get("energy_fpga") or {}).get("total_pj")
    return doc


# --------------------------------------------------------------------------- tables

_COLUMNS = [
    ("family", "family", "{}"),
    ("integer_accuracy", "accuracy", "{:.2%}"),
    ("luts", "LUT4", "{}"),
    ("luts_vs_conv", "LUT ratio", "{:.2f}"),
    ("ffs", "FF", "{}"),
    ("carry", "carry", "{}"),
    ("brams", "BRAM", "{}"),
    ("dsps", "DSP", "{}"),
    ("fmax_mhz", "Fmax MHz", "{:.1f}"),
    ("cycles_per_image", "cycles/img", "{}"),
    ("images_per_s", "img/s", "{:,.0f}"),
    ("energy_pj_45nm", "nJ/inf 45nm ops", "{:,.2f}"),
    ("energy_pj_fpga", "nJ/inf FPGA", "{:,.0f}"),
    ("status", "status", "{}"),
]


def _cells(row: dict) -> list[str]:
    cells = []
    for key, _, fmt in _COLUMNS:
        v = row.get(key)
        if v is not None and key.startswith("energy_pj"):
            v = v / 1000.0  # shown in nJ
        cells.append("–" if v is None else fmt.format(v))
    return cells


def markdown_table(doc: dict) -> str:
    lines = [f"# hwgen compare: {', '.join(doc['families'])} on {doc['device']}", "",
             f"Models: {doc['source']}; LUT ratio = LUT4 / LUT4 of the `{doc['baseline']}` (multiplier) version. "
             "LUT4, FF, carry, BRAM, DSP: Yosys `stat`; Fmax: nextpnr `--report`; accuracy: the golden "
             "model on the 360 test digits; energy (estimates, sources in `report.md`): operation counts × "
             "the 45 nm table of `hwgen.energy`, and the FPGA estimate from utilization and the simulated "
             "switching activity.", "",
             "| " + " | ".join(h for _, h, _ in _COLUMNS) + " |",
             "|" + "|".join("---" for _ in _COLUMNS) + "|"]
    for row in doc["rows"]:
        lines.append("| " + " | ".join(_cells(row)) + " |")
    section = doc.get("winograd_vs_direct")
    if section:
        from .report import WINOGRAD_NOTE, winograd_tables

        for title, header, rows in winograd_tables(section):
            lines += ["", f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(rows_) + " |" for rows_ in rows]
        lines += ["", f"{WINOGRAD_NOTE[0].upper()}{WINOGRAD_NOTE[1:]}. Sources: {section['source']}."]
    return "\n".join(lines) + "\n"


def format_table(doc: dict) -> str:
    """The comparison as a terminal table (rich), with the LUT ratios spelled out below."""
    from io import StringIO

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{', '.join(doc['families'])} on {doc['device']} (models: {doc['source']})")
    for _, head, _ in _COLUMNS:
        table.add_column(head, justify="left" if head in ("family", "status") else "right")
    for row in doc["rows"]:
        table.add_row(*_cells(row))
    buf = StringIO()
    Console(file=buf, width=160, force_terminal=False).print(table)
    lines = [buf.getvalue().rstrip()]
    base = next((r for r in doc["rows"] if r["family"] == doc["baseline"]), None)
    if base and base.get("luts"):
        for row in doc["rows"]:
            if row["family"] != doc["baseline"] and row.get("luts"):
                lines.append(f"{row['family']}: {row['luts']} LUT4 = {row['luts'] / base['luts']:.2f} × the "
                             f"multiplier version's {base['luts']}")
    section = doc.get("winograd_vs_direct")
    for layer in (section or {}).get("layers", []):
        lut = layer["luts"]
        luts = (f"; engine LUT4 {lut['direct']} vs {lut['winograd']}" if lut["direct"] is not None
                and lut["winograd"] is not None else "")
        lines.append(f"{layer['layer']}: {section['winograd']} does {layer['absdiff']['ratio']:.2f}× fewer absolute "
                     f"differences than {section['direct']} ({layer['absdiff']['winograd']:,} vs "
                     f"{layer['absdiff']['direct']:,}){luts}")
    return "\n".join(lines)
