"""The build folder: one class knows its files, the hand-off between hwgen's stages.

``hwgen build`` writes, into one folder::

    model.json, model.npz   the integer model (hwgen.ir)
    hwgen_top.v             Verilog of the accelerator (top module ``hwgen_top``)
    manifest.json           ports, latency, folding and parameters of the design
    vectors.npz             quantized test images, their labels and the golden outputs

and the later stages add to it::

    sim_<simulator>.json    the simulation's summary (hwgen sim)
    sim/<simulator>/        the simulator's build, logs and waveforms
    synth/<device>/         synthesis and place-and-route of one device (hwgen synth)
    report.json             every device's synthesis summary; with report.md/.html, the report

Every stage finds a file through :class:`BuildFolder` (no file name elsewhere), so renaming
one is one line here.  :func:`hwgen.flow.build` writes a new folder into a temporary sibling
and moves it into place at the end, so a failed build leaves nothing behind.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import HwgenError
from .util import atomic_write

__all__ = ["BuildFolder", "BuildError", "MANIFEST_FORMAT"]

#: The ``format`` of every manifest hwgen writes.
MANIFEST_FORMAT = "hwgen-build"


class BuildError(HwgenError, RuntimeError):
    """A build folder that is missing, incomplete or from another hwgen."""


class BuildFolder:
    """The files of one build folder at ``path`` (which need not exist yet)."""

    MODEL = "model.json"
    MODEL_ARRAYS = "model.npz"
    MANIFEST = "manifest.json"
    VECTORS = "vectors.npz"
    SUMMARY = "report.json"
    #: The Verilog's file name when the manifest does not name it.
    VERILOG = "hwgen_top.v"

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"BuildFolder({str(self.path)!r})"

    # ------------------------------------------------------------------ the files

    @property
    def model(self) -> Path:
        return self.path / self.MODEL

    @property
    def manifest_file(self) -> Path:
        return self.path / self.MANIFEST

    @property
    def vectors(self) -> Path:
        return self.path / self.VECTORS

    @property
    def summary(self) -> Path:
        """``report.json``: the synthesis summary of every device (and the report's data)."""
        return self.path / self.SUMMARY

    def verilog(self, manifest: dict | None = None) -> Path:
        """The accelerator's Verilog, as the manifest names it."""
        return self.path / (manifest or {}).get("verilog", self.VERILOG)

    def sim_summary(self, simulator: str) -> Path:
        return self.path / f"sim_{simulator}.json"

    def sim_dir(self, simulator: str) -> Path:
        return self.path / "sim" / simulator

    def synth_dir(self, device: str) -> Path:
        return self.path / "synth" / device

    def synth_report(self, device: str) -> Path:
        return self.synth_dir(device) / "report.json"

    # ------------------------------------------------------------------ reading

    def manifest(self) -> dict:
        """The manifest; :class:`BuildError` if this is no hwgen build folder."""
        path = self.manifest_file
        if not path.is_file():
            raise BuildError(f"{self.path} is not an hwgen build folder (no {self.MANIFEST}); run "
                             f"'hwgen build --out {self.path}' first")
        try:
            manifest = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise BuildError(f"{path}: not valid JSON ({e})") from None
        if manifest.get("format") != MANIFEST_FORMAT:
            raise BuildError(f"{path}: not an hwgen build manifest")
        return manifest

    # ------------------------------------------------------------------ writing

    def write_design(self, verilog: str, manifest: dict) -> None:
        """Write the Verilog (named by ``manifest["verilog"]``) and the manifest, each through
        a temporary file and a rename (complete or absent)."""
        self.path.mkdir(parents=True, exist_ok=True)
        body = json.dumps(manifest, indent=2) + "\n"
        atomic_write(self.verilog(manifest), lambda f: f.write(verilog))
        atomic_write(self.manifest_file, lambda f: f.write(body))
