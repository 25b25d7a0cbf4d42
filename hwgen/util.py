"""Small helpers shared by every stage that writes a file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_json", "Steps"]


def atomic_write(path, write, binary: bool = False) -> Path:
    """Write ``path`` through a temporary file in the same folder, then rename it into place.

    ``write(f)`` fills the open file.  A reader never sees a half-written file, and a failure
    (or Ctrl-C) leaves the old file, if any, untouched and no temporary file behind.
    The file gets the ordinary ``0o644`` mode (``mkstemp`` makes it private).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_json(path, doc) -> Path:
    """:func:`atomic_write` of ``doc`` as indented JSON with a final newline."""
    text = json.dumps(doc, indent=2) + "\n"
    return atomic_write(path, lambda f: f.write(text))


class Steps:
    """A transient rich progress bar over ``total`` steps, or nothing when ``enabled`` is false:
    ``set(what)`` names the current step, ``advance()`` counts one done."""

    def __init__(self, enabled: bool, total: int, title: str = ""):
        self.enabled, self.total, self.title = enabled, total, title

    def __enter__(self):
        if self.enabled:
            from rich.progress import Progress
            self._p = Progress(transient=True)
            self._p.__enter__()
            self._task = self._p.add_task(self.title, total=self.total)
        return self

    def __exit__(self, *exc):
        if self.enabled:
            self._p.__exit__(*exc)

    def set(self, what: str):
        if self.enabled:
            self._p.update(self._task, description=what)

    def advance(self):
        if self.enabled:
            self._p.advance(self._task)
