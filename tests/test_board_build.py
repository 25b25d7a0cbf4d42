"""Bitstreams (hwgen.boards.build, hwgen.boards.pll): PLL settings against icepll/ecppll, the
timing check, ``hwgen build --board``; the bitstream builds themselves are in the slow tier."""

import json
import re
import subprocess

import pytest

from board_fixtures import tiny_build, tiny_model
from hwgen import synth
from hwgen.boards import BOARDS, board, build_settings
from hwgen.boards.build import TimingError, build_board, check_timing, link_pace
from hwgen.boards.pll import PLLError, ecp5_pll, ice40_pll
from hwgen.boards.top import uart_divisor
from hwgen.cli import main
from hwgen.toolchain import tool_env, venv_bin


ARGS = {}  # the tool's arguments, set by each test


def _tool(name, cwd):
    path = venv_bin() / f"yowasp-{name}"
    if not path.is_file():
        pytest.skip(f"yowasp-{name} missing")
    return subprocess.run([str(path), *ARGS[name]], capture_output=True, text=True,
                          env=tool_env(), timeout=300, cwd=cwd)


@pytest.mark.parametrize("f_in, f_out", [(12, 18), (12, 24), (12, 30), (48, 60)])
def test_ice40_pll_matches_icepll(f_in, f_out, tmp_path):
    ARGS["icepll"] = ["-i", str(f_in), "-o", str(f_out)]
    out = _tool("icepll", tmp_path).stdout
    p = ice40_pll(f_in, f_out)
    want = {k: int(re.search(rf"^{k}:\s+(\d+)", out, re.M).group(1))
            for k in ("DIVR", "DIVF", "DIVQ", "FILTER_RANGE")}
    assert want == {"DIVR": p.divr, "DIVF": p.divf, "DIVQ": p.divq,
                    "FILTER_RANGE": p.filter_range}
    assert p.f_out_mhz == pytest.approx(f_out, rel=0.01)


@pytest.mark.parametrize("f_in, f_out", [(25, 50), (25, 60), (48, 72)])
def test_ecp5_pll_matches_ecppll(f_in, f_out, tmp_path):
    ARGS["ecppll"] = ["-i", str(f_in), "-o", str(f_out), "-f", "pll.v"]
    out = _tool("ecppll", tmp_path).stdout
    p = ecp5_pll(f_in, f_out)
    got = [int(re.search(rf"{k}:\s+(\d+)", out).group(1))
           for k in ("Refclk divisor", "Feedback divisor", "clkout0 divisor")]
    assert got == [p.clki_div, p.clkfb_div, p.clkop_div]
    assert 400 <= p.f_vco_mhz <= 800


def test_pll_out_of_range_is_one_line():
    with pytest.raises(PLLError, match="16..275 MHz"):
        ice40_pll(12, 300)
    with pytest.raises(PLLError, match="cannot make 13.37 MHz"):
        ecp5_pll(25, 13.37, tolerance=1e-6)


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_every_board_makes_its_baud_and_clock(name):
    b = board(name)
    assert uart_divisor(b.osc_mhz) >= 100  # 115200 baud within 1 %
    if b.clock_mhz != b.osc_mhz:
        make = ice40_pll if b.device.startswith("ice40") else ecp5_pll
        assert make(b.osc_mhz, b.clock_mhz).f_out_mhz == pytest.approx(b.clock_mhz)


def test_the_folding_keeps_up_with_the_link():
    # 64 bytes at 115200 baud: 5.56 ms an image; at 18 MHz, half of that is 50000 cycles.
    assert link_pace("icebreaker", 64) == 50000
    device, cycles = build_settings("ulx3s", tiny_model(), cycles=None)
    assert device == "ecp5-85f" and cycles == link_pace("ulx3s", 18)
    assert build_settings("ulx3s", tiny_model(), cycles=99)[1] == 99


NEXTPNR_REPORT = {
    "fmax": {"accel_clk": {"achieved": 15.2, "constraint": 18.0},
             "clk": {"achieved": 40.0, "constraint": 12.0}},
    "critical_paths": [{"from": "posedge accel_clk", "to": "posedge accel_clk", "path": [
        {"type": "clk-to-q", "delay": 1.0, "from": {"cell": "a"}, "to": {"cell": "b"}},
        {"type": "logic", "delay": 64.8, "from": {"cell": "b"}, "to": {"cell": "c"}}]}],
}


def test_a_timing_miss_names_the_numbers_and_the_path():
    pnr = synth.parse_nextpnr_report(NEXTPNR_REPORT, "ice40")
    with pytest.raises(TimingError, match=r"accel_clk: 15.2 MHz achieved, 18.0 MHz required; "
                                          r"critical path a -> c, 65.8 ns, 1 logic levels"):
        check_timing(pnr)
    NEXTPNR_REPORT["fmax"]["accel_clk"]["achieved"] = 18.5
    check_timing(synth.parse_nextpnr_report(NEXTPNR_REPORT, "ice40"))


def test_build_board_refuses_another_device(tmp_path, capsys):
    assert main(["build", "--out", str(tmp_path / "b"), "--board", "ulx3s",
                 "--device", "ice40-up5k"]) == 2
    assert capsys.readouterr().err.strip() == (
        "hwgen: error: --device ice40-up5k is not the ulx3s's; leave it out")
    assert not (tmp_path / "b").exists()


@pytest.mark.slow
def test_same_inputs_same_bitstream(tmp_path):
    a = build_board(tiny_build(tmp_path / "a"), "icebreaker", seed=3)
    b = build_board(tiny_build(tmp_path / "b"), "icebreaker", seed=3)
    assert a["bitstream_sha256"] == b["bitstream_sha256"]
    assert a["timing_met"] and a["plls"] == 1
    doc = json.loads((tmp_path / "a" / "report.json").read_text())
    assert doc["board"]["icebreaker"]["fmax_accel_mhz"] == a["fmax_accel_mhz"] >= 18


@pytest.mark.slow
def test_a_clock_too_fast_fails_the_build(tmp_path):
    build = tiny_build(tmp_path / "t")
    with pytest.raises(TimingError, match=r"MHz achieved, 2\d\d.\d MHz required; critical path"):
        build_board(build, "icebreaker", clock_mhz=250)
    report = json.loads((build / "board" / "icebreaker" / "board_report.json").read_text())
    assert report["timing_met"] is False


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_every_board_top_elaborates_on_its_platform(name):
    """The build plan (pins, PLL, clocks, LEDs) of each board, without running the tools."""
    from hwgen.boards.top import BoardTop
    from hwgen.hw.top import Accelerator

    b = board(name)
    top = BoardTop(b, Accelerator(tiny_model()))
    plan = b.platform_class()().build(top, name="top", do_build=False)
    script = plan.files["build_top.sh"]
    assert ("icepack" if b.device.startswith("ice40") else "ecppack") in script
    constraints = plan.files["top.pcf" if b.device.startswith("ice40") else "top.lpf"]
    assert "uart" in constraints
    rtlil = plan.files["top.il"]
    assert ("SB_PLL40_2_PAD" in rtlil or "EHXPLLL" in rtlil) == (b.clock_mhz != b.osc_mhz)
