"""Running testbenches on a component in Amaranth's simulator, shared by the unit tests."""

from __future__ import annotations

import os
from contextlib import nullcontext

from amaranth.sim import Simulator


def run_benches(dut, *benches, name: str = "dut"):
    """Run the ``async def bench(ctx)`` testbenches ``benches`` on ``dut`` with one clock of
    1 µs, until all return; with ``HWGEN_VCD=1`` the waves go to ``{name}.vcd``."""
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    for bench in benches:
        sim.add_testbench(bench)
    waves = sim.write_vcd(f"{name}.vcd") if os.environ.get("HWGEN_VCD") == "1" else nullcontext()
    with waves:
        sim.run()
