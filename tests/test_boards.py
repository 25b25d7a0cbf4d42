"""The board registry and ``hwgen program`` (hwgen.boards)."""

import os
import stat

import pytest

from hwgen import boards, synth
from hwgen.cli import main


AMARANTH_DEVICE = {"ice40-up5k": ("iCE40UP5K", "SG48"), "ecp5-85f": ("LFE5U-85F", "BG381"),
                   "ecp5-25f": ("LFE5U-25F", "MG285")}


@pytest.mark.parametrize("name", sorted(boards.BOARDS))
def test_board_matches_its_amaranth_platform(name):
    b = boards.board(name)
    platform = b.platform_class()
    res = [r for r in platform.resources if (r.name, r.number) == (platform.default_clk, 0)]
    assert res and res[0].clock.frequency == b.osc_mhz * 1e6
    assert b.device in synth.DEVICES
    assert AMARANTH_DEVICE[b.device] == (platform.device, platform.package)


def test_unknown_board_is_one_line():
    with pytest.raises(boards.BoardError, match="known: icebreaker, ulx3s, orangecrab"):
        boards.board("arty")


def fake_tool(tmp_path, name, code=0):
    """A programmer stand-in that records its arguments (the real one needs a board)."""
    path = tmp_path / name
    path.write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path}/args\necho oops >&2\nexit {code}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_program_runs_the_boards_programmer(tmp_path, capsys):
    bit = tmp_path / "top.bit"
    bit.write_bytes(b"\xff\x00")
    tool = fake_tool(tmp_path, "openFPGALoader")
    env = {"PATH": str(tmp_path)}
    cmd = boards.program("ulx3s", bit, env=env)
    assert cmd == [str(tool), "-b", "ulx3s", "-m", str(bit)]
    assert (tmp_path / "args").read_text().split() == ["-b", "ulx3s", "-m", str(bit)]


def test_program_failure_names_the_tool(tmp_path):
    bit = tmp_path / "top.bin"
    bit.write_bytes(b"\x00")
    fake_tool(tmp_path, "iceprog", code=3)
    with pytest.raises(boards.ToolError, match=r"iceprog failed \(3\): oops"):
        boards.program("icebreaker", bit, env={"PATH": str(tmp_path)})


def test_missing_programmer_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    bit = tmp_path / "top.bit"
    bit.write_bytes(b"\x00")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("DFU_UTIL", raising=False)
    monkeypatch.setattr(boards, "tool_env", lambda: dict(os.environ))
    assert main(["program", "--board", "orangecrab", str(bit)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "dfu-util not found" in err[0]


def test_missing_bitstream_is_exit_2(tmp_path, capsys):
    assert main(["program", "--board", "icebreaker", str(tmp_path / "none.bin")]) == 2
    assert "no bitstream at" in capsys.readouterr().err
