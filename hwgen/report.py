"""The report of one build or of several compared builds: ``report.json``, ``report.md``, ``report.html``.

:func:`write_report` takes one build folder, or a list of compared variants (conv / adder /
shift / shift-add versions of a network), gathers what each build's stages wrote, adds the
energy estimates of :mod:`hwgen.energy`, and writes three files into ``out_dir``:

=================  ===========================================================================
``report.json``    machine-readable, schema below (merged into an existing file: the ``synth``
                   summary that :func:`hwgen.synth.synthesize` keeps there survives)
``report.md``      Markdown tables, every figure with its source
``report.html``    the same, self-contained: plots are inline base64 PNGs (matplotlib figures
                   drawn without pyplot), no external file, script or style sheet
=================  ===========================================================================

Both readable files are rendered from the Jinja2 templates ``hwgen/templates/report.html.j2`` and
``report.md.j2`` and read in the same order: the headline first (one figure of LUTs, Fmax,
images/s, energy and accuracy per variant, and one short table), the accuracy-against-LUTs
Pareto front, LUTs per engine stacked across the variants; then the detail (every figure per
variant, direct against Winograd, operations and energy per layer and per engine).  The
provenance of every figure and table is kept, folded in a ``<details>`` element linked from it.

Every number carries its source: the tool report file and key it was read from, or the module
and the sourced constants it was computed with (see :mod:`hwgen.energy`).

Schema (``"schema": "hwgen-report", "version": 1``)::

    {
      "schema": "hwgen-report", "version": 1,
      "title": str, "device": str | null,
      "variants": [{
        "name": str, "build_dir": str | null,
        "cycles_per_image": int | null,   # the manifest's (optional, added in version 1)
        "accuracy":     {"value": float | null, "images": int | null, "source": str},
        "sim_accuracy": {"value": float | null, "images": int | null, "simulator": str, "source": str} | null,
        "synth": {"device": str, "logic_cells": int, "luts": int, "ffs": int, "brams": int, "dsps": int,
                  "fmax_mhz": float | null, "modules": {engine: {"luts": int, ...}} | null,
                  "source": str} | null,
        "energy_ops": {"total_pj": float, "pj_by_op": {op: pJ}, "ops_by_type": {op: count},
                       "layers": [{"layer", "kind", "label", "pj", "pj_by_op", "by_type"}],
                       "source": str, "constants": {op: source}} | null,
        "energy_fpga": {"total_pj": float, "pj_by_part": {part: pJ}, "power_mw": float,
                        "engines": [{"engine", "layers", "activity", "cells", "pj"}],
                        "source": str, "inputs": {...}, "coefficients": {...}} | null,
        "notes": [str]        # why a part is missing
      }],
      "figures": [{"id": str, "title": str, "file": str, "sources": [str]}],   # reading order;
                              # ids: headline, pareto, luts_per_engine, energy_ops, energy_fpga
      "estimates": str,       # the caveat that every energy figure is an estimate
      "winograd_vs_direct": {...} | null   # optional, added in version 1 (see below)
    }

``winograd_vs_direct`` (an optional key added without a version bump: readers of version 1 that
do not know it lose nothing; ``null`` or absent when not asked for: ``winograd_pair`` of :func:`write_report`)
sets the Winograd-AdderNet layers of one variant against the direct 3×3 AdderNet form of the
same layers in another variant (:func:`winograd_vs_direct`)::

    {
      "direct": str, "winograd": str,        # the two variants' names
      "layers": [{
        "layer": str,                        # the Winograd layer = its engine's name
        "direct_engine": str | null,         # the engine of the direct build it is set against
        "absdiff": {"direct": int, "winograd": int, "ratio": float},   # ratio = direct / winograd
        "add":     {"direct": int, "winograd": int, "ratio": float},   # per inference
        "luts":    {"direct": int | null, "winograd": int | null, "ratio": float | null},
        "cycles_per_image": {"direct": int | null, "winograd": int | null},   # of the engine
        "folding": {"direct": {...} | null, "winograd": {...} | null}   # the manifests' folding entries
      }],
      "builds": {"direct" | "winograd": {"name": str, "accuracy": float | null, "luts": int | null,
                                          "logic_cells": int | null, "fmax_mhz": float | null,
                                          "cycles_per_image": int | null, "device": str | null}},
      "source": str
    }

Op counts: :func:`hwgen.energy.winograd_vs_direct` on the Winograd model (the direct form: per
output pixel and channel ``9C`` absolute differences and ``9C - 1`` additions; the Winograd form's
additions include its input and output transforms); LUTs: the engines' entries in each build's
synthesis ``modules`` (hierarchical synthesis; ``null`` for a flat one or a build that did not
fit).

A variant given as a dict may carry its figures directly (``name``, ``accuracy``, ``synth``,
``energy_ops``, ``energy_fpga`` in the shapes above, each with its ``source``) or point at a
build folder with ``build_dir``.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
from pathlib import Path

import numpy as np

from . import energy, ir
from .buildfolder import BuildFolder
from .errors import HwgenError
from .util import atomic_write, atomic_write_json

__all__ = ["SCHEMA", "VERSION", "collect_build", "write_report", "pareto_front", "winograd_vs_direct"]

SCHEMA = "hwgen-report"
VERSION = 1

ESTIMATES = ("Energy figures are estimates: the op-count figure prices the arithmetic with published 45 nm "
             "per-operation energies; the FPGA figure combines simulated switching activity, synthesis "
             "utilization and a coefficient model. Neither is a measurement.")


class ReportError(HwgenError, ValueError):
    """A report that cannot be written (no build, nothing to report); one line."""


# --------------------------------------------------------------------------- collecting

def _load(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def collect_build(build_dir, device: str | None = None, name: str | None = None, vcd=None) -> dict:
    """One variant of the report from a build folder (see the schema in the module docstring)."""
    build = Path(build_dir)
    folder = BuildFolder(build)
    manifest = _load(folder.manifest_file)
    if manifest is None:
        raise ReportError(f"{build} is not an hwgen build folder (no {folder.MANIFEST}); run `hwgen build` first")
    notes = []
    model = ir.Model.load(build)
    v = {"name": name or model.name, "build_dir": str(build), "notes": notes,
         "cycles_per_image": manifest.get("cycles_per_image")}

    v["accuracy"] = {"value": manifest.get("golden_accuracy"), "images": None,
                     "source": f"{folder.manifest_file}: golden_accuracy (golden model on the "
                               f"{manifest.get('data', {}).get('name', 'digits')} test set; "
                               f"the hardware is bit-exact with it, see the sim report)"}
    try:
        with np.load(folder.vectors, allow_pickle=False) as vec:
            v["accuracy"]["images"] = int(len(vec["labels"]))
    except (OSError, KeyError, ValueError):
        pass
    v["sim_accuracy"] = None
    for sim in ("verilator", "icarus"):
        s = _load(folder.sim_summary(sim))
        if s:
            v["sim_accuracy"] = {"value": s.get("accuracy"), "images": s.get("images"), "simulator": sim,
                                 "mismatches": len(s.get("mismatches", [])),
                                 "source": f"{folder.sim_summary(sim)}: accuracy, images, mismatches"}
            break

    summary = _load(folder.summary) or {}
    devices = sorted((summary.get("synth") or {}).keys())
    # The build's own target first (the device `hwgen build --device` recorded), else any.
    dev = device or (manifest.get("device") if manifest.get("device") in devices else None) \
        or (devices[0] if devices else None)
    synth = (summary.get("synth") or {}).get(dev) if dev else None
    if synth:
        v["synth"] = {"device": dev, **{k: synth.get(k) for k in ("logic_cells", "luts", "ffs", "carry", "brams",
                                                                   "dsps", "fmax_mhz")},
                      "modules": synth.get("modules"),
                      "source": f"{build / 'report.json'}: synth.{dev} (Yosys stat, nextpnr report; "
                                f"full report in {build / 'synth' / dev / 'report.json'})"}
    else:
        v["synth"] = None
        notes.append(f"no synthesis report{' for ' + dev if dev else ''}: run `hwgen synth {build}`")

    ops = energy.op_energy(model)
    v["energy_ops"] = {
        "total_pj": ops["total_pj"], "pj_by_op": ops["pj_by_op"], "ops_by_type": ops["ops_by_type"],
        "layers": [{k: l[k] for k in ("layer", "kind", "label", "pj", "pj_by_op", "by_type")}
                   for l in ops["layers"]],
        "source": f"hwgen.energy.op_energy({build / 'model.json'}) × table {ops['table']['name']}; "
                  f"rule: {ops['table']['rule']}",
        "constants": ops["table"]["sources"], "table": ops["table"],
    }
    v["energy_fpga"] = None
    if synth:
        try:
            f = energy.fpga_energy(build, dev, vcd=vcd)
            v["energy_fpga"] = {
                "total_pj": f["total_pj"], "pj_by_part": f["pj_by_part"], "power_mw": f["power_mw"],
                "cycles_per_image": f["cycles_per_image"], "fmax_mhz": f["fmax_mhz"],
                "engines": [{k: r[k] for k in ("engine", "layers", "activity", "busy", "cells", "pj")}
                            for r in f["engines"]],
                "source": "hwgen.energy.fpga_energy: " + "; ".join(f"{k}={val}" for k, val in f["inputs"].items()),
                "inputs": f["inputs"], "coefficients": f["coefficients"],
            }
        except energy.EnergyError as e:
            notes.append(f"no FPGA energy estimate: {e}")
    return v


def _as_variant(item, device, vcd=None) -> dict:
    if isinstance(item, (str, os.PathLike)):
        return collect_build(item, device=device, vcd=vcd)
    if isinstance(item, dict):
        if item.get("build_dir") and not item.get("energy_ops"):
            v = collect_build(item["build_dir"], device=device, name=item.get("name"), vcd=item.get("vcd", vcd))
            for key in ("accuracy", "synth", "energy_fpga"):
                if item.get(key) is not None:
                    v[key] = item[key]
            return v
        v = {"name": item.get("name", "variant"), "build_dir": item.get("build_dir"), "notes": list(item.get("notes", [])),
             "sim_accuracy": item.get("sim_accuracy"),
             "cycles_per_image": item.get("cycles_per_image")}
        for key in ("accuracy", "synth", "energy_ops", "energy_fpga"):
            v[key] = item.get(key)
        if isinstance(v["accuracy"], (int, float)):
            v["accuracy"] = {"value": float(v["accuracy"]), "images": None, "source": "given by the caller"}
        return v
    raise ReportError(f"a build must be a folder path or a dict, not {type(item).__name__}")


# --------------------------------------------------------------------------- direct vs Winograd

def _ratio(direct, winograd):
    return round(direct / winograd, 4) if direct is not None and winograd else None


def _module_luts(variant: dict, engine: str | None):
    mods = (variant.get("synth") or {}).get("modules") or {}
    m = mods.get(engine) if engine else None
    return m.get("luts") if isinstance(m, dict) else m


def winograd_vs_direct(direct: dict, winograd: dict) -> dict | None:
    """The ``winograd_vs_direct`` section (schema in the module docstring) of two report
    variants: ``winograd`` a build with ``winograd_adder_conv2d`` layers, ``direct`` the build of
    the same network with direct 3×3 ``adder_conv2d`` layers.  ``None`` if the Winograd variant
    has no build folder or no Winograd layer.

    A Winograd layer is set against the direct build's ``adder_conv2d`` of the same name (engines
    are named after their layer), else against the direct build's adder conv in the same
    position."""
    wdir = winograd.get("build_dir")
    if not wdir:
        return None
    wmodel = ir.Model.load(wdir)
    counts = energy.winograd_vs_direct(wmodel)
    if not counts:
        return None
    ddir = direct.get("build_dir")
    forms = {type(layer).direct_form for layer in wmodel.layers} - {None}
    dconvs = [l.name for l in ir.Model.load(ddir).layers if type(l) in forms] if ddir else None
    mans = {"direct": (_load(BuildFolder(ddir).manifest_file) or {}) if ddir else {},
            "winograd": _load(BuildFolder(wdir).manifest_file) or {}}
    engines = {side: {e.get("name"): e for e in man.get("engines", [])} for side, man in mans.items()}

    def engine_figures(side, name):
        e = engines[side].get(name) if name else None
        fold = (mans[side].get("folding") or {}).get(name) if name else None
        return None if e is None else e.get("cycles_per_image"), None if fold is None else dict(fold)

    layers = []
    for k, r in enumerate(counts):
        name = r["layer"]
        if dconvs is None or name in dconvs:
            dname = name
        else:
            dname = dconvs[k] if k < len(dconvs) else None
        lut_d, lut_w = _module_luts(direct, dname), _module_luts(winograd, name)
        (cyc_d, fold_d), (cyc_w, fold_w) = engine_figures("direct", dname), engine_figures("winograd", name)
        layers.append({
            "layer": name, "direct_engine": dname,
            **{op: {"direct": int(r["direct"][op]), "winograd": int(r["winograd"][op]),
                    "ratio": _ratio(r["direct"][op], r["winograd"][op])} for op in ("absdiff", "add")},
            "luts": {"direct": lut_d, "winograd": lut_w, "ratio": _ratio(lut_d, lut_w)},
            "cycles_per_image": {"direct": cyc_d, "winograd": cyc_w},
            "folding": {"direct": fold_d, "winograd": fold_w},
        })

    def build(side, v):
        s = v.get("synth") or {}
        return {"name": v["name"], "accuracy": (v.get("accuracy") or {}).get("value"), "luts": s.get("luts"),
                "logic_cells": s.get("logic_cells"), "fmax_mhz": s.get("fmax_mhz"),
                "cycles_per_image": mans[side].get("cycles_per_image"), "device": s.get("device")}

    synth_src = "; ".join(f"{v['name']}: " + (f"{v['synth']['source']} modules" if v.get("synth") else
                                              "no synthesis report (not synthesized, or it did not fit)")
                          for v in (direct, winograd))
    return {"direct": direct["name"], "winograd": winograd["name"], "layers": layers,
            "builds": {"direct": build("direct", direct), "winograd": build("winograd", winograd)},
            "source": f"op counts: hwgen.energy.winograd_vs_direct({Path(wdir) / 'model.json'}) (direct form per "
                      f"output pixel and channel: 9C absdiff, 9C-1 adds; the Winograd adds include the input "
                      f"and output transforms); LUT4 per engine: {synth_src}; engine cycles and folding: "
                      f"manifest.json of each build"}


# --------------------------------------------------------------------------- headline

def images_per_s(variant: dict) -> float | None:
    """Images per second of a variant: its Fmax over its cycles per image (``None`` if either
    is unknown)."""
    fmax = (variant.get("synth") or {}).get("fmax_mhz")
    cycles = variant.get("cycles_per_image")
    return fmax * 1e6 / cycles if fmax and cycles else None


def headline(variants: list[dict]) -> list[dict]:
    """The headline figures of each variant, what a reader of the report came for: accuracy,
    LUTs (logic cells where the device reports them), Fmax, images/s and both energy
    estimates; ``None`` where a figure is missing."""
    rows = []
    for v in variants:
        s = v.get("synth") or {}
        acc = (v.get("accuracy") or {}).get("value")
        rows.append({"name": v["name"], "accuracy": acc,
                     "luts": s.get("logic_cells") or s.get("luts"),
                     "fmax_mhz": s.get("fmax_mhz"), "images_per_s": images_per_s(v),
                     "energy_ops_pj": (v.get("energy_ops") or {}).get("total_pj"),
                     "energy_fpga_pj": (v.get("energy_fpga") or {}).get("total_pj")})
    return rows


def _headline_sources(variants: list[dict]) -> list[str]:
    src = []
    for v in variants:
        src.append(f"{v['name']}: accuracy — {(v.get('accuracy') or {}).get('source', 'none')}; "
                   f"LUTs, Fmax — {(v.get('synth') or {}).get('source', 'none')}; "
                   f"images/s — Fmax / cycles_per_image of {v.get('build_dir') or 'the caller'}"
                   f"{'/manifest.json' if v.get('build_dir') else ''}; "
                   f"op energy — {(v.get('energy_ops') or {}).get('source', 'none')}; "
                   f"FPGA energy — {(v.get('energy_fpga') or {}).get('source', 'none')}")
    return src


# --------------------------------------------------------------------------- plots

def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points ``(luts, accuracy)`` no other point beats (fewer LUTs and at least
    as accurate, or as few LUTs and more accurate), sorted by LUTs."""
    front = []
    for i, (l, a) in enumerate(points):
        if not any((l2 <= l and a2 >= a) and (l2 < l or a2 > a) for l2, a2 in points):
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


class _Figures:
    """The two pyplot calls the plots make, on :class:`matplotlib.figure.Figure` instead: without
    pyplot no backend is chosen or switched (a notebook that writes a report keeps its inline
    plots) and no global figure list is shared between threads."""

    @staticmethod
    def subplots(nrows=1, ncols=1, figsize=None, **kwargs):
        from matplotlib.figure import Figure

        fig = Figure(figsize=figsize)
        return fig, fig.subplots(nrows, ncols, **kwargs)

    @staticmethod
    def get_cmap(name):
        import matplotlib

        return matplotlib.colormaps[name]


#: One colour per variant, in the order of the report (the first is the colour the report's
#: rendering test looks for in the headline figure).
FAMILY_COLOURS = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3",
                  "#8C8C8C", "#CCB974", "#64B5CD")
_OP_COLOURS = {"add": "#4C72B0", "absdiff": "#DD8452", "shift": "#55A868", "mult": "#C44E52",
               "compare": "#8172B3"}
_PART_COLOURS = {"logic": "#4C72B0", "clock": "#DD8452", "bram": "#55A868", "dsp": "#C44E52",
                 "static": "#8172B3"}
#: The panels of the headline figure: (key of :func:`headline`, title, scale, value format).
_PANELS = (("luts", "logic cells (LUTs)", 1, "{:,.0f}"), ("fmax_mhz", "Fmax (MHz)", 1, "{:.1f}"),
           ("images_per_s", "images / s", 1, "{:,.0f}"),
           ("energy_ops_pj", "energy / inference (nJ,\n45 nm op counts, estimate)", 1e-3, "{:.3g}"),
           ("accuracy", "test accuracy (%)", 100, "{:.2f}"))


def _colour(i: int) -> str:
    return FAMILY_COLOURS[i % len(FAMILY_COLOURS)]


def _headline_figure(plt, variants):
    from matplotlib.ticker import FuncFormatter

    rows = headline(variants)
    names = [r["name"] for r in rows]
    width = max(11, 2.2 * len(_PANELS) + 0.25 * len(rows))
    fig, axes = plt.subplots(1, len(_PANELS), figsize=(width, 2.9))
    for ax, (key, title, scale, fmt) in zip(axes, _PANELS):
        vals = [None if r[key] is None else r[key] * scale for r in rows]
        known = [x for x in vals if x is not None]
        ax.bar(range(len(rows)), [x or 0 for x in vals],
               color=[_colour(i) for i in range(len(rows))])
        for x, val in enumerate(vals):
            ax.text(x, val or 0, "n/a" if val is None else fmt.format(val), ha="center",
                    va="bottom", fontsize=7)
        if key == "accuracy" and known:
            # Accuracies differ by tenths of a point: a zero baseline would hide them.
            ax.set_ylim(max(0.0, min(known) - 3), min(100.0, max(known)) + 1)
        elif known:
            ax.set_ylim(0, 1.18 * max(known) or 1)
        ax.set_title(title, fontsize=9)
        ax.set_xticks(range(len(rows)), names, rotation=35, ha="right", fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:,.4g}"))
        ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return fig


def _pareto_figure(plt, pts):
    fig, ax = plt.subplots(figsize=(5, 3.6))
    xy = [(p[0], p[1]) for p in pts]
    front = pareto_front(xy)
    for k, (l, a, v, i) in enumerate(pts):
        ax.scatter([l], [100 * a], s=60, color=_colour(i), zorder=3)
        ax.annotate(v["name"], (l, 100 * a), textcoords="offset points", xytext=(5, 5), fontsize=8)
    if len(front) > 1:
        ax.plot([xy[i][0] for i in front], [100 * xy[i][1] for i in front], "--", color="#555555",
                label="Pareto front")
        ax.legend(fontsize=8)
    ax.set_xlabel("logic cells (LUTs)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("accuracy against LUTs" + (" (one variant)" if len(pts) == 1 else ""), fontsize=9)
    ax.grid(alpha=0.3)
    return fig


def _engine_figure(plt, with_modules):
    """LUTs per engine, one stacked bar per variant: an engine keeps its colour across variants."""
    engines = []
    for v in with_modules:
        engines += [e for e in v["synth"]["modules"] if e not in engines]
    cmap = plt.get_cmap("tab20")
    fig, ax = plt.subplots(figsize=(max(4, 0.8 * len(with_modules) + 2.5), 3.6))
    labels = [v["name"] for v in with_modules]
    bottom = [0] * len(with_modules)
    for k, e in enumerate(engines):
        vals = []
        for v in with_modules:
            m = v["synth"]["modules"].get(e, 0)
            vals.append((m.get("luts") or 0) if isinstance(m, dict) else (m or 0))
        ax.bar(labels, vals, bottom=bottom, label=e, color=cmap(k % 20), edgecolor="white",
               linewidth=0.5)
        bottom = [b + x for b, x in zip(bottom, vals)]
    for x, total in enumerate(bottom):
        ax.text(x, total, f"{total:,}", ha="center", va="bottom", fontsize=8)
    devices = sorted({v["synth"]["device"] for v in with_modules})
    ax.set_ylabel("LUT4s")
    ax.set_title(f"LUT4s per engine ({', '.join(devices)})", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="engine",
              title_fontsize=8)
    ax.tick_params(axis="x", rotation=30, labelsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def _energy_ops_figure(plt, with_ops):
    if len(with_ops) == 1:
        layers = [l for l in with_ops[0]["energy_ops"]["layers"] if l["pj"] > 0]
        labels = [l["layer"] for l in layers]
        stacks = {op: [l["pj_by_op"].get(op, 0.0) for l in layers] for op in energy.OP_TYPES}
        title = f"{with_ops[0]['name']} — op-count energy per layer (estimate)"
    else:
        labels = [v["name"] for v in with_ops]
        stacks = {op: [v["energy_ops"]["pj_by_op"].get(op, 0.0) for v in with_ops]
                  for op in energy.OP_TYPES}
        title = "op-count energy per inference by op type (estimate)"
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(labels) + 3), 3.8))
    bottom = [0.0] * len(labels)
    for op, vals in stacks.items():
        if any(vals):
            ax.bar(labels, vals, bottom=bottom, label=op, color=_OP_COLOURS[op])
            bottom = [b + x for b, x in zip(bottom, vals)]
    ax.set_ylabel("pJ per inference")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.tick_params(axis="x", rotation=45, labelsize=8)
    return fig


def _energy_fpga_figure(plt, with_fpga):
    labels = [v["name"] for v in with_fpga]
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(labels) + 3), 3.8))
    bottom = [0.0] * len(labels)
    for part, colour in _PART_COLOURS.items():
        vals = [v["energy_fpga"]["pj_by_part"].get(part, 0.0) / 1e3 for v in with_fpga]
        if any(vals):
            ax.bar(labels, vals, bottom=bottom, label=part, color=colour)
            bottom = [b + x for b, x in zip(bottom, vals)]
    ax.set_ylabel("nJ per image")
    ax.set_title("FPGA energy per image by part (estimate)", fontsize=9)
    ax.legend(fontsize=8)
    return fig


def _figures(variants: list[dict]) -> list[dict]:
    """Every figure of the report, in reading order: the headline, the Pareto front, LUTs per
    engine, then the energy breakdowns (``section`` ``"detail"``)."""
    plt = _Figures
    figs = [{"id": "headline", "section": "headline", "png": _png(_headline_figure(plt, variants)),
             "title": "Headline: LUTs, Fmax, images/s, energy and accuracy per variant",
             "sources": _headline_sources(variants)}]

    pts = [(v["synth"].get("logic_cells") or v["synth"].get("luts"), v["accuracy"]["value"], v, i)
           for i, v in enumerate(variants)
           if v.get("synth") and v.get("accuracy") and v["accuracy"].get("value") is not None]
    if pts:
        figs.append({"id": "pareto", "section": "headline", "png": _png(_pareto_figure(plt, pts)),
                     "title": "Accuracy against cost: the Pareto front",
                     "sources": sorted({p[2]["accuracy"]["source"] for p in pts} |
                                       {p[2]["synth"]["source"] for p in pts})})

    with_modules = [v for v in variants if v.get("synth") and v["synth"].get("modules")]
    if with_modules:
        figs.append({"id": "luts_per_engine", "section": "headline",
                     "png": _png(_engine_figure(plt, with_modules)), "title": "LUTs per engine",
                     "sources": [v["synth"]["source"] + " modules" for v in with_modules]})

    with_ops = [v for v in variants if v.get("energy_ops")]
    if with_ops:
        figs.append({"id": "energy_ops", "section": "detail",
                     "png": _png(_energy_ops_figure(plt, with_ops)),
                     "title": "Energy breakdown, op counts × 45 nm energies (estimate)",
                     "sources": [v["energy_ops"]["source"] for v in with_ops]})

    with_fpga = [v for v in variants if v.get("energy_fpga")]
    if with_fpga:
        figs.append({"id": "energy_fpga", "section": "detail",
                     "png": _png(_energy_fpga_figure(plt, with_fpga)),
                     "title": "FPGA energy breakdown (estimate)",
                     "sources": [v["energy_fpga"]["source"] for v in with_fpga]})
    return figs
# --------------------------------------------------------------------------- writing

def _fmt_pj(v):
    if v is None:
        return "—"
    return f"{v / 1e3:,.2f} nJ" if v >= 1e3 else f"{v:,.1f} pJ"


def _fmt(v, spec=""):
    return "—" if v is None else format(v, spec)


def _fold(f) -> str:
    """`` (pe 1, simd 4)``: a folding entry of the manifest (``weights`` left out)."""
    items = [f"{k} {int(v) if isinstance(v, bool) else v}" for k, v in (f or {}).items() if k != "weights"]
    return f" ({', '.join(items)})" if items else ""


def winograd_tables(section: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of the direct-vs-Winograd comparison (:func:`winograd_vs_direct`):
    per layer, and the two builds; shared by ``report.md/.html`` and ``compare.md``."""
    d, w = section["direct"], section["winograd"]
    rows = []
    for l in section["layers"]:
        lut, cyc = l["luts"], l["cycles_per_image"]
        rows.append([l["layer"] if l["direct_engine"] in (None, l["layer"]) else f"{l['layer']} ({d}: {l['direct_engine']})",
                     _fmt(l["absdiff"]["direct"], ","), _fmt(l["absdiff"]["winograd"], ","),
                     _fmt(l["absdiff"]["ratio"], ".2f"), _fmt(l["add"]["direct"], ","), _fmt(l["add"]["winograd"], ","),
                     _fmt(l["add"]["ratio"], ".2f"),
                     _fmt(lut["direct"]) + _fold(l["folding"]["direct"]),
                     _fmt(lut["winograd"]) + _fold(l["folding"]["winograd"]),
                     _fmt(lut["ratio"], ".2f"), f"{_fmt(cyc['direct'])} / {_fmt(cyc['winograd'])}"])
    per_layer = (f"Direct vs Winograd per layer: {d} vs {w}",
                 ["layer", "absdiff direct", "absdiff Winograd", "absdiff ratio", "adds direct", "adds Winograd",
                  "adds ratio", f"LUT4 {d}", f"LUT4 {w}", "LUT ratio", "engine cycles/img direct / Winograd"], rows)
    builds = []
    for side in ("direct", "winograd"):
        b = section["builds"][side]
        acc = b.get("accuracy")
        builds.append([b["name"], _fmt(None if acc is None else 100 * acc, ".2f"), _fmt(b.get("luts")),
                       _fmt(b.get("logic_cells")), _fmt(b.get("fmax_mhz"), ".1f"), _fmt(b.get("cycles_per_image"))])
    whole = (f"Direct vs Winograd builds: {d} vs {w}" + (f" on {section['builds']['winograd']['device']}"
                                                          if section["builds"]["winograd"].get("device") else ""),
             ["build", "accuracy %", "LUT4", "logic cells", "Fmax MHz", "cycles/img"], builds)
    return [per_layer, whole]


WINOGRAD_NOTE = ("ratios are direct / Winograd (above 1: the Winograd form needs fewer); op counts per inference; "
                 "LUT4 of the layer's engine in each build (synthesis modules), its folding in brackets "
                 "(direct: pe × simd; Winograd tile engine: pe, overlap); engine cycles per image of each build")



def _table(tid: str, title: str, header: list[str], rows: list[list[str]],
           sources: list[str]) -> dict:
    return {"id": tid, "title": title, "header": header, "rows": rows, "sources": sources}


def _headline_table(variants: list[dict]) -> dict:
    rows = [[r["name"], _fmt(None if r["accuracy"] is None else 100 * r["accuracy"], ".2f"),
             _fmt(r["luts"], ","), _fmt(r["fmax_mhz"], ".1f"), _fmt(r["images_per_s"], ",.0f"),
             _fmt_pj(r["energy_ops_pj"]), _fmt_pj(r["energy_fpga_pj"])] for r in headline(variants)]
    header = ["variant", "accuracy %", "logic cells", "Fmax MHz", "images/s",
              "energy / inference (45 nm ops, estimate)", "energy / image (FPGA, estimate)"]
    return _table("headline", "Headline", header, rows, _headline_sources(variants))


def _tables(variants: list[dict], section: dict | None = None) -> list[dict]:
    """The detail tables of the report (``id``, ``title``, ``header``, ``rows``, ``sources``),
    after the headline: every figure per variant, direct against Winograd, then per layer."""
    rows = []
    for v in variants:
        s = v.get("synth") or {}
        acc = (v.get("accuracy") or {}).get("value")
        e_ops = (v.get("energy_ops") or {}).get("total_pj")
        e_f = (v.get("energy_fpga") or {}).get("total_pj")
        rows.append([v["name"], _fmt(None if acc is None else 100 * acc, ".2f"),
                     _fmt(s.get("logic_cells")), _fmt(s.get("luts")), _fmt(s.get("ffs")),
                     _fmt(s.get("brams")), _fmt(s.get("dsps")), _fmt(s.get("fmax_mhz"), ".1f"),
                     _fmt(v.get("cycles_per_image")), _fmt_pj(e_ops), _fmt_pj(e_f)])
    header = ["variant", "accuracy %", "logic cells", "LUT4", "FF", "BRAM", "DSP", "Fmax MHz",
              "cycles/img", "op-count energy / inference (estimate)",
              "FPGA energy / image (estimate)"]
    out = [_table("summary", "Summary", header, rows, _headline_sources(variants))]
    if section:
        for k, (title, header, rows) in enumerate(winograd_tables(section)):
            out.append(_table(f"winograd{k}", title, header, rows,
                              [WINOGRAD_NOTE, section["source"]]))
    for n, v in enumerate(variants):
        eo = v.get("energy_ops")
        if eo:
            rows = [[l["layer"], l.get("label", l["kind"]),
                     *(str(l["by_type"].get(t, 0)) for t in energy.OP_TYPES), _fmt_pj(l["pj"])]
                    for l in eo["layers"]]
            consts = "; ".join(f"{k}: {s}" for k, s in eo.get("constants", {}).items())
            out.append(_table(f"ops{n}", f"{v['name']}: operations and energy per layer (estimate)",
                              ["layer", "kind", *energy.OP_TYPES, "energy"], rows,
                              [eo["source"], f"Constants — {consts}"]))
        ef = v.get("energy_fpga")
        if ef:
            rows = [[r["engine"], ", ".join(r["layers"]), f"{r['activity']:.4f}", f"{r['busy']:.3f}",
                     f"{r['cells']:.0f}", _fmt_pj(r["pj"])] for r in ef["engines"]]
            rows.append(["parts", "", "", "", "",
                         ", ".join(f"{k} {_fmt_pj(x)}" for k, x in ef["pj_by_part"].items())])
            coefs = "; ".join(f"{k} = {c['value']:.3g} {c['unit']} "
                              f"({'ASSUMPTION: ' if c['assumption'] else ''}{c['source']})"
                              for k, c in ef["coefficients"].items() if isinstance(c, dict))
            title = (f"{v['name']}: FPGA energy per engine (estimate, {ef['cycles_per_image']:.0f} "
                     f"cycles/image at {ef['fmax_mhz']:.1f} MHz, ≈ {ef['power_mw']:.2f} mW)")
            header = ["engine", "layers", "activity (toggles/bit/cycle)", "busy fraction", "cells",
                      "energy"]
            out.append(_table(f"fpga{n}", title, header, rows,
                              [ef["source"], f"Coefficients — {coefs}"]))
    return out


def _md_cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _templates():
    """The Jinja2 environment of the report templates shipped in ``hwgen/templates``: HTML
    autoescaped, Markdown not."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("hwgen", "templates"),
                             autoescape=lambda name: bool(name) and name.endswith(".html.j2"),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)
    env.filters["md"] = _md_cell
    env.filters["b64"] = _b64
    return env


def _render(name: str, doc: dict, headline_table: dict, tables: list[dict],
            figs: list[dict]) -> str:
    notes = [(v["name"], n) for v in doc["variants"] for n in v.get("notes", [])]
    text = _templates().get_template(name).render(
        doc=doc, estimates=ESTIMATES, headline=headline_table, tables=tables, notes=notes,
        figures=[f for f in figs if f["section"] == "headline"],
        detail_figures=[f for f in figs if f["section"] == "detail"])
    return re.sub(r"\n{3,}", "\n\n", text)  # the templates' blocks leave runs of blank lines


def write_report(out_dir, builds, device: str | None = None, title: str | None = None, vcd=None,
                 winograd_pair: tuple[str, str] | None = None) -> dict:
    """Write ``report.json``, ``report.md`` and ``report.html`` into ``out_dir``.

    Parameters
    ----------
    out_dir : str or os.PathLike
        The folder to write into (created if missing); an existing ``report.json`` there is
        merged into, not replaced.
    builds : str, os.PathLike, dict or a list of them
        One build folder, one variant dict, or a list of them (compared variants).
    device : str, optional
        The synthesis device to report (default: the first one each build has).
    title : str, optional
        The report's title (default: the variants' names).
    vcd : str or os.PathLike, optional
        A waveform for the FPGA energy estimate (default: the build's own, if any).
    winograd_pair : (str, str), optional
        ``(direct name, Winograd name)``, two of the variants: adds the per-layer
        direct-vs-Winograd section (key ``winograd_vs_direct``, tables in the Markdown and
        HTML), see :func:`winograd_vs_direct`.

    Returns
    -------
    dict
        The ``report.json`` document (schema in the module docstring).

    Raises
    ------
    ReportError
        Nothing to report, a folder that is not a build, or a bad ``winograd_pair``.
    """
    items = builds if isinstance(builds, list) else [builds]
    if not items:
        raise ReportError("nothing to report: give at least one build folder")
    variants = [_as_variant(b, device, vcd) for b in items]
    section = None
    if winograd_pair is not None:
        by_name = {v["name"]: v for v in variants}
        pair = tuple(winograd_pair)
        if len(pair) != 2 or any(n not in by_name for n in pair):
            raise ReportError(f"winograd_pair {pair!r} is not two of the variants ({', '.join(by_name)})")
        section = winograd_vs_direct(*(by_name[n] for n in pair))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figs = _figures(variants)
    for f in figs:
        f["file"] = f"report_{f['id']}.png"
        atomic_write(out / f["file"], lambda fh, data=f["png"]: fh.write(data), binary=True)
    dev = device or next((v["synth"]["device"] for v in variants if v.get("synth")), None)
    doc = {"schema": SCHEMA, "version": VERSION,
           "title": title or ("hwgen report: " + ", ".join(v["name"] for v in variants)),
           "device": dev, "variants": variants,
           "figures": [{k: f[k] for k in ("id", "title", "file", "sources")} for f in figs],
           "estimates": ESTIMATES, "winograd_vs_direct": section}
    head, tables = _headline_table(variants), _tables(variants, section)
    existing = _load(out / "report.json") or {}
    merged = {**existing, **doc}  # keep what other stages keep there (the synth summary)
    atomic_write_json(out / "report.json", merged)
    md = _render("report.md.j2", doc, head, tables, figs)
    page = _render("report.html.j2", doc, head, tables, figs)
    atomic_write(out / "report.md", lambda fh: fh.write(md))
    atomic_write(out / "report.html", lambda fh: fh.write(page))
    return merged
