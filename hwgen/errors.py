"""The one base of the errors a user can cause.

A :class:`HwgenError` means "your input, your files or your machine is wrong", never a bug in
hwgen: the command line prints its first line and exits with status 2, without a traceback and
without a half-written build folder.  Each stage derives its own class from it (and keeps the
built-in class it always was, such as :class:`ValueError`, so callers that caught that still do):

========================================  ========================================================
:class:`hwgen.ir.ModelError`              a malformed, inconsistent or unsupported integer model
:class:`hwgen.data.DataError`             a data set that cannot be used
:class:`hwgen.flow.BuildError`            a build folder missing, incomplete or from another hwgen
:class:`hwgen.simulate.SimulationError`   the simulation could not run
:class:`hwgen.synth.SynthError`           synthesis could not run, or the design does not fit
:class:`hwgen.toolchain.ToolError`        a tool that is missing or broken
========================================  ========================================================

and the errors of the other stages: :class:`hwgen.energy.EnergyError`,
:class:`hwgen.report.ReportError`, :class:`hwgen.compare.CompareError`,
:class:`hwgen.sweep.SweepError`, :class:`hwgen.search.SearchError`,
:class:`hwgen.boards.BoardError`, :class:`hwgen.frame.FrameError`,
:class:`hwgen.nn.checkpoint.CheckpointError`, :class:`hwgen.nn.models.ConfigError`, and
:class:`hwgen.cli.UserError` (a bad command-line argument).
"""

from __future__ import annotations

__all__ = ["HwgenError", "first_line"]


class HwgenError(Exception):
    """An error a user can mend; its message is one line that says what to change."""


def first_line(e: BaseException, skip: tuple[str, ...] = ()) -> str:
    """The informative first line of ``e``'s message, lines starting with any of ``skip``
    (a library's boilerplate) left out; the class name when nothing is left."""
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(skip)]
    return lines[0] if lines else type(e).__name__
