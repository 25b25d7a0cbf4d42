"""Bitstreams: a build folder's accelerator on a board, through the platform's own ``build()``.

:func:`build_board` puts the build's accelerator into a :class:`~hwgen.boards.top.BoardTop`,
has the amaranth-boards platform write its build plan (pins and clock constraints from the
board's definition) and runs it with the YoWASP tools (``YOSYS``, ``NEXTPNR_ICE40``,
``ICEPACK``, ``NEXTPNR_ECP5``, ``ECPPACK`` from :func:`hwgen.toolchain.tool_env`), in
``DIR/board/<board>/``. nextpnr runs with a fixed seed, so the same inputs give the same
bitstream. Timing is checked against every clock of the board top (the oscillator's and the
PLL's): a miss fails the build with the achieved and required MHz and the critical path.
The summary goes to ``DIR/board/<board>/board_report.json`` (nextpnr's own is
``report.json`` beside it) and under ``["board"][<board>]`` of
``DIR/report.json``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from hwgen.synth import SynthError, _meaningful_last_line, _run, parse_nextpnr_report
from hwgen.toolchain import ToolError, require
from hwgen.util import atomic_write_json

from . import BoardError, board
from .bench import accelerator_of
from .top import BAUD, BoardTop

__all__ = ["BoardBuildError", "TimingError", "build_board", "check_timing", "link_pace",
           "format_board_summary"]


class BoardBuildError(SynthError):
    """The board's bitstream could not be made (a tool failed, the design does not fit)."""


class TimingError(BoardBuildError):
    """The placed design is slower than one of the board's clocks."""


def link_pace(board_name: str, image_len: int, clock_mhz: float | None = None,
              baud: int = BAUD) -> int:
    """Cycles per image that keep the accelerator twice as fast as the UART delivers images:
    the folding budget of ``hwgen build --board`` (no faster folding is of use on the link)."""
    b = board(board_name)
    clock = b.clock_mhz if clock_mhz is None else clock_mhz
    image_s = 10 * image_len / baud  # 8N1: 10 bits a byte
    return max(1, int(clock * 1e6 * image_s / 2))


def check_timing(fmax: dict) -> None:
    """TimingError naming the first clock whose achieved MHz is below its constraint
    (``fmax``: :func:`hwgen.synth.parse_nextpnr_report`'s, with its critical paths)."""
    for clock, f in sorted(fmax["fmax"].items()):
        achieved, required = f.get("achieved_mhz"), f.get("constraint_mhz")
        if achieved is not None and required is not None and achieved < required:
            path = next((p for p in fmax["critical_paths"]
                         if clock in f"{p.get('from')} {p.get('to')}".split()), None)
            where = (f"; critical path {path['start']} -> {path['end']}, {path['delay_ns']} ns, "
                     f"{path['logic_levels']} logic levels" if path else "")
            raise TimingError(f"timing failed on {clock}: {achieved:.1f} MHz achieved, "
                              f"{required:.1f} MHz required{where}; pick a lower --clock or "
                              f"fold more (--cycles)")


def build_board(build_dir, board_name: str, *, clock_mhz: float | None = None, seed: int = 1,
                baud: int = BAUD, max_count: int = 4, timeout: float = 3600) -> dict:
    """Make ``build_dir``'s bitstream for ``board_name``; returns the report (also written)."""
    b = board(board_name)
    build = Path(build_dir).resolve()
    family = b.device.split("-")[0]
    try:
        for tool in ("yosys", f"nextpnr-{family}", "icepack" if family == "ice40" else "ecppack"):
            require(tool)
    except ToolError as e:
        raise BoardBuildError(str(e)) from None
    accelerator, manifest = accelerator_of(build)
    try:
        top = BoardTop(b, accelerator, clock_mhz=clock_mhz, baud=baud, max_count=max_count)
    except ValueError as e:
        raise BoardError(f"{b.name}: {e}") from None
    out = build / "board" / b.name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)

    platform = b.platform_class()()
    plan = platform.build(top, name="top", do_build=False,
                          nextpnr_opts=f"--seed {int(seed)} --report report.json "
                                       f"--timing-allow-fail")
    plan.extract(out)
    log = out / "build.log"
    cmd = ["sh", f"{plan.script}.sh"]
    # The OrangeCrab's plan also stamps a DFU suffix on the bitstream (for its bootloader);
    # without dfu-suffix (Debian dfu-util) the step is skipped and the report says so.
    dfu = "DFU_SUFFIX" in plan.files[f"{plan.script}.sh"]
    dfu_missing = dfu and not shutil.which("dfu-suffix")
    if dfu_missing:
        cmd = ["env", "DFU_SUFFIX=true", *cmd]
    seconds = _run(cmd, out, log, f"{b.name} build", timeout)
    report_file = out / "report.json"
    if seconds < 0 or not report_file.is_file():
        tim = out / "top.tim"
        raise BoardBuildError(f"{b.name} bitstream failed: "
                              f"{_meaningful_last_line(tim if tim.is_file() else log)} "
                              f"(log: {log})")
    pnr = parse_nextpnr_report(json.loads(report_file.read_text()), family)
    bitstream = out / ("top.bin" if family == "ice40" else "top.bit")
    if not bitstream.is_file():
        raise BoardBuildError(f"{b.name} build made no {bitstream.name} (log: {log})")
    util = pnr["utilization"]
    report = {
        "board": b.name, "device": b.device, "seed": int(seed),
        **top.describe(),
        "cycles_per_image": manifest.get("cycles_per_image"),
        "target_cycles": manifest.get("target_cycles"),
        "fmax": pnr["fmax"], "critical_paths": pnr["critical_paths"],
        "fmax_accel_mhz": _clock_fmax(pnr, "accel_clk" if top.pll else None),
        "logic_cells": pnr["logic_cells"], "logic_cells_available": pnr["logic_cells_available"],
        "brams": pnr["brams"], "dsps": pnr["dsps"],
        "plls": util.get("ICESTORM_PLL" if family == "ice40" else "EHXPLLL", {}).get("used"),
        "bitstream": str(bitstream), "bitstream_sha256": _sha256(bitstream),
        "seconds": round(seconds, 1), "folder": str(out),
        "dfu_suffix": (not dfu_missing) if dfu else None,
    }
    report["timing_met"] = True
    try:
        check_timing(pnr)
    except TimingError:
        report["timing_met"] = False
        atomic_write_json(out / "board_report.json", report)
        raise
    atomic_write_json(out / "board_report.json", report)
    _merge(build / "report.json", b.name, report)
    return report


def _clock_fmax(pnr: dict, name: str | None) -> float | None:
    """The accelerator clock's Fmax: the PLL's clock, or the one clock of a one-domain top."""
    fmax = pnr["fmax"]
    if name is None:
        return pnr["fmax_mhz"]
    for clock, f in fmax.items():
        if clock == name or clock.endswith(name):
            return f.get("achieved_mhz")
    return None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _merge(path: Path, name: str, report: dict) -> None:
    doc = json.loads(path.read_text()) if path.is_file() else {}
    keys = ("device", "clock_mhz", "osc_mhz", "fmax_accel_mhz", "fmax", "timing_met",
            "logic_cells", "logic_cells_available", "brams", "dsps", "bitstream",
            "bitstream_sha256", "seed", "baud")
    doc.setdefault("board", {})[name] = {k: report[k] for k in keys}
    atomic_write_json(path, doc)


def format_board_summary(r: dict) -> str:
    """A few readable lines of a :func:`build_board` report."""
    clocks = ", ".join(f"{clk} {f['achieved_mhz']:.1f} MHz (needs {f['constraint_mhz']:.1f})"
                       for clk, f in sorted(r["fmax"].items()))
    pll = "PLL" if r["pll"] else "no PLL"
    return "\n".join([
        f"{r['board']} ({r['device']}): {r['bitstream']}",
        f"  accelerator at {r['clock_mhz']:g} MHz ({pll}, oscillator {r['osc_mhz']:g} MHz), "
        f"Fmax {clocks}",
        f"  {r['logic_cells']}/{r['logic_cells_available']} logic cells, {r['brams']} BRAM, "
        f"{r['dsps']} DSP; UART {r['baud']} baud, {r['max_count']} images a frame",
        f"  sha256 {r['bitstream_sha256'][:16]}…, {r['seconds']:.0f} s",
    ])
