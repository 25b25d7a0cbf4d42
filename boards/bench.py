"""The board testbench's runner: the link core's Verilog for a build, simulated in cocotb.

:func:`simulate_board` writes ``DIR/board/board_link.v`` (a :class:`~hwgen.boards.link.LinkCore`
around the build's accelerator, at the simulation's scaled baud rate) and runs the cocotb tests
of :mod:`hwgen.sim.board` on it with Icarus Verilog or Verilator (build products in
``DIR/board/sim_<simulator>/``). The Verilog's ports: ``clk``, ``rst`` (the line's domain),
``accel_clk``, ``accel_rst`` (the accelerator's), ``rx``, ``tx``, ``busy``, ``error``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from hwgen import ir
from hwgen.flow import read_manifest
from hwgen.util import atomic_write

from .link import LinkCore

__all__ = ["SIM_DIVISOR", "accelerator_of", "link_verilog", "simulate_board"]

#: Cycles per bit in simulation: the UART at clk/8 instead of 115200 baud.
SIM_DIVISOR = 8
TEST_MODULE = "hwgen.sim.board"


def accelerator_of(build_dir):
    """The accelerator of a build folder, as ``hwgen build`` made it (same model, folding
    overrides and pace), and the build's manifest."""
    from hwgen.hw.top import Accelerator

    manifest = read_manifest(build_dir)
    model = ir.Model.load(build_dir)
    return Accelerator(model, manifest.get("folding_overrides") or None,
                       target_cycles=manifest.get("target_cycles")), manifest


def link_verilog(build_dir, out: Path, *, divisor: int = SIM_DIVISOR, timeout_bytes: int = 40,
                 max_count: int = 4, accel_domain: str = "accel") -> dict:
    """Write the link core of ``build_dir``'s accelerator to ``out`` (top ``board_link``);
    returns the link's description (:meth:`hwgen.boards.link.LinkCore.describe`)."""
    from amaranth.back import verilog

    accelerator, _ = accelerator_of(build_dir)
    core = LinkCore(accelerator, divisor=divisor, timeout=timeout_bytes * 10 * divisor,
                    max_count=max_count, accel_domain=accel_domain)
    text = "`timescale 1ns/1ps\n" + verilog.convert(core, name="board_link", emit_src=False)
    atomic_write(out, lambda f: f.write(text))
    return core.describe()


def simulate_board(build_dir, simulator: str = "icarus", images: int | None = 8,
                   test: str = "board_frames", accel_domain: str = "accel",
                   extra_env: dict | None = None, verbose: bool = False) -> dict:
    """Run the board test ``test`` (``board_frames`` or ``board_bridge``) on ``build_dir``;
    the testbench's summary (``passed``, the cases, the cycles of each image)."""
    from hwgen.simulate import SimulationError, run_testbench

    build = Path(build_dir).resolve()
    folder = build / "board"
    sim_dir = folder / f"sim_{simulator}"
    sim_dir.mkdir(parents=True, exist_ok=True)
    verilog = folder / "board_link.v"
    link = link_verilog(build, verilog, accel_domain=accel_domain)
    result = sim_dir / f"{test}.json"
    result.unlink(missing_ok=True)
    env = {"HWGEN_BUILD_DIR": str(build), "HWGEN_LINK": json.dumps(link),
           "HWGEN_IMAGES": "" if images is None else str(int(images)),
           "HWGEN_RESULT": str(result), "HWGEN_BOARD_TEST": test, **(extra_env or {})}
    t0, t1, t2 = run_testbench(simulator, [verilog], "board_link", sim_dir, TEST_MODULE, env,
                               verbose=verbose)
    if not result.is_file():
        raise SimulationError(f"the board test ended without a result "
                              f"(log: {sim_dir / 'test.log'})")
    summary = json.loads(result.read_text())
    summary.update(simulator=simulator, link=link, build_s=round(t1 - t0, 3),
                   test_s=round(t2 - t1, 3))
    return summary
