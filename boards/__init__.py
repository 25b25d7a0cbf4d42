"""The open boards hwgen targets, on ``amaranth-boards`` (issue 16): which platform, device and
oscillator each has, and which programmer loads its bitstream.

``program`` runs the board's usual programmer the way the board's own amaranth-boards
``toolchain_program`` does (same tool, same arguments, same environment variable to point at
it), but on a bitstream file that already exists, and with a one-line error when the tool is
missing instead of a traceback.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import HwgenError
from ..toolchain import ToolError, tool_env

__all__ = ["Board", "BOARDS", "board", "programmer", "program", "BoardError"]


class BoardError(HwgenError, ValueError):
    """An unknown board name or a bitstream that is not there."""


@dataclass(frozen=True)
class Board:
    name: str
    platform: str  # "module:Class" in amaranth_boards
    device: str  # hwgen's device name (hwgen.synth)
    osc_mhz: float  # the board's oscillator
    programmer: str  # the programmer's command
    program_env: str  # the variable amaranth-boards reads to find it
    program_args: tuple[str, ...]  # its arguments before the bitstream
    install_hint: str
    clock_mhz: float  # the accelerator's clock by default (a PLL makes it unless it is osc_mhz)
    leds: tuple[tuple[str, int, str | None], ...]  # (resource, number, subsignal): busy, error
    uart_pins: tuple[str, str] | None = None  # (rx, tx) on a connector, for a board without one
    notes: str = ""

    def platform_class(self):
        module, cls = self.platform.split(":")
        return getattr(importlib.import_module(f"amaranth_boards.{module}"), cls)


BOARDS: dict[str, Board] = {b.name: b for b in (
    Board("icebreaker", "icebreaker:ICEBreakerPlatform", "ice40-up5k", 12.0,
          "iceprog", "ICEPROG", (), "apt install fpga-icestorm (or the OSS CAD Suite)",
          clock_mhz=18.0, leds=(("led_g", 0, None), ("led_r", 0, None)),
          notes="UART on the FT2232H's second channel (the board's USB port)"),
    Board("ulx3s", "ulx3s:ULX3S_85F_Platform", "ecp5-85f", 25.0,
          "openFPGALoader", "OPENFPGALOADER", ("-b", "ulx3s", "-m"),
          "apt install openfpgaloader",
          clock_mhz=50.0, leds=(("led", 0, None), ("led", 1, None)),
          notes="UART on the FT231X (the board's US1 USB port)"),
    Board("orangecrab", "orangecrab_r0_2:OrangeCrabR0_2_25FPlatform", "ecp5-25f", 48.0,
          "dfu-util", "DFU_UTIL", ("-a", "0", "-D"), "apt install dfu-util",
          clock_mhz=48.0, leds=(("rgb_led", 0, "g"), ("rgb_led", 0, "r")),
          uart_pins=("0", "1"),
          notes="the USB port is the FPGA's own (no USB-UART chip): the UART is on the Feather "
                "header, pin 0 RX and pin 1 TX, through a 3.3 V USB-serial adapter"),
)}


def board(name: str) -> Board:
    """The board called ``name``; BoardError naming the known ones otherwise."""
    try:
        return BOARDS[name]
    except KeyError:
        raise BoardError(f"unknown board {name!r} (known: {', '.join(BOARDS)})") from None


def programmer(b: Board, env: dict | None = None) -> str:
    """Path of ``b``'s programmer (its environment variable first, then PATH); ToolError with
    the tool's name and how to install it when it is missing."""
    env = tool_env() if env is None else env
    path = env.get(b.program_env) or shutil.which(b.programmer, path=env.get("PATH"))
    if not path:
        raise ToolError(f"{b.programmer} not found: {b.name} bitstreams are loaded with it; "
                        f"install it ({b.install_hint}) or set {b.program_env}")
    return path


def program(name: str, bitstream: str | os.PathLike, env: dict | None = None) -> list[str]:
    """Load ``bitstream`` into board ``name``; returns the command it ran."""
    b = board(name)
    path = Path(bitstream)
    if not path.is_file():
        raise BoardError(f"no bitstream at {path}")
    env = tool_env() if env is None else env
    cmd = [programmer(b, env), *b.program_args, str(path)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()
        raise ToolError(f"{b.programmer} failed ({done.returncode}): "
                        f"{last[-1] if last else 'no output'}")
    return cmd


def build_settings(name: str, model, clock_mhz: float | None = None,
                   cycles: int | None = None) -> tuple[str, int]:
    """``hwgen build --board``'s device and pace (cycles per image) for ``model`` on board
    ``name``: the board's device, and ``cycles`` if given, else the link's pace
    (:func:`hwgen.boards.build.link_pace`)."""
    from math import prod

    from .build import link_pace

    b = board(name)
    return b.device, cycles or link_pace(b.name, prod(model.input_shape), clock_mhz)


def add_build_options(p) -> None:
    """``hwgen build``'s board options."""
    p.add_argument("--board", default=None, choices=sorted(BOARDS),
                   help="also make a bitstream for this board; picks --device and, unless "
                        "--cycles is given, the folding: the cheapest that keeps up with the "
                        "board's UART")
    p.add_argument("--clock", type=float, default=None, metavar="MHZ",
                   help="with --board: the accelerator's clock (default: the board's; a PLL "
                        "makes it when it is not the oscillator's)")
    p.add_argument("--seed", type=int, default=1, help="with --board: nextpnr's seed")


def build_bitstream(args) -> None:
    """The bitstream step of ``hwgen build --board`` (after the build folder is written)."""
    from .build import build_board, format_board_summary

    report = build_board(args.out, args.board, clock_mhz=args.clock, seed=args.seed)
    print(format_board_summary(report))


def add_commands(sub) -> None:
    """The board subcommands of ``hwgen`` (cli.make_parser calls this with its subparsers)."""
    p = sub.add_parser("program", help="load a bitstream into a board with its usual programmer")
    p.add_argument("--board", required=True, choices=sorted(BOARDS))
    p.add_argument("bitstream", help="the bitstream file (.bin for iCE40, .bit for ECP5)")
    p.set_defaults(func=_cmd_program)

    p = sub.add_parser("infer", help="send a build's test images to a board over its serial port")
    p.add_argument("--port", required=True, help="the board's serial port (e.g. /dev/ttyUSB1)")
    p.add_argument("--build", default="build/digits",
                   help="the build folder the board runs (default: %(default)s)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--data", default=None, metavar="D.npz",
                       help="send this data set's test images (default: the build's vectors)")
    group.add_argument("--images", type=int, default=None, metavar="N",
                       help="send the first N of the build's test images (default: all)")
    p.add_argument("--board", default=None, choices=sorted(BOARDS),
                   help="read baud, batch and clock from the build's bitstream for this board")
    p.add_argument("--batch", type=int, default=None, help="images a frame (default: 4)")
    p.add_argument("--baud", type=int, default=None, help="default: 115200")
    p.add_argument("--clock", type=float, default=None, metavar="MHZ",
                   help="the accelerator's clock, for its images/s (default: the board build's)")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for a reply")
    p.set_defaults(func=_cmd_infer)


def _cmd_infer(args) -> int:
    from hwgen import ir

    from .host import format_infer, infer

    result = infer(args.port, args.build, data=args.data, images=args.images, board=args.board,
                   batch=args.batch, baud=args.baud, clock_mhz=args.clock,
                   timeout_s=args.timeout)
    print(format_infer(result, list(ir.Model.load(args.build).classes or [])))
    return 0


def _cmd_program(args) -> int:
    cmd = program(args.board, args.bitstream)
    print(f"programmed {args.board}: {' '.join(cmd)}")
    return 0
