"""Design-space sweeps: build and synthesize the cross product of models, bit widths,
foldings and devices, one table row per point.

A **spec** (a TOML file, or the same keys as a Python dict) names the axes::

    sources     = ["embedded", "random:adder", "random:shift:3", "model.pt", "intmodel/"]
    act_bits    = [8, 4]             # default [8]
    weight_bits = [8, 4]             # default [8]
    foldings    = ["auto", "min", "narrow", {conv1 = {pe = 1, simd = 3}}]   # default ["auto"]
    devices     = ["ice40-up5k", "ecp5-25f"]                               # default ["ice40-up5k"]

    [folding.narrow]                 # a named folding: {layer: {pe, simd}}
    conv1 = {pe = 2, simd = 9}

    [synth]                          # options of hwgen.synth.synthesize, the same for every point
    seed = 1
    bitstream = false                # the default in a sweep: no packing step

A source is ``embedded`` (the embedded checkpoint), ``random:<kind>[:<seed>]`` (a random
digits model of that layer kind, :func:`hwgen.testmodels.random_digits_model`), a PyTorch
checkpoint (quantized at each ``act_bits`` × ``weight_bits``) or an integer model folder /
``model.json`` (already integer: the bit-width axes do not apply and collapse to one point).
Relative paths are taken from the spec file's folder.  Folding ``auto`` is hwgen's balanced
default, ``min`` is ``pe = simd = 1`` on every conv / dense layer (the smallest design).

:func:`points` expands the spec into its cross product; every point has a ``key``, a hash of
its parameters (and of the source file's bytes), so the same point keeps its key across runs.
:func:`run_sweep` runs the points that have no finished row yet, each with :func:`run_point`
into ``OUT/points/<name>-<key>/`` (build folder plus ``synth/<device>/``), and appends each
row to ``OUT/results.jsonl`` as soon as the point finishes (flushed and fsync'd).  A sweep
that is interrupted keeps its finished points; run again, it only runs the rest.  A point
whose design does not fit the device (``does-not-fit``) is a finished result; a point that
failed otherwise (``error``) is retried.  At the end ``OUT/sweep.csv`` and ``OUT/sweep.md``
hold the latest row of every point of the spec, in point order.

Points run in parallel on this machine's cores (a :class:`concurrent.futures.ProcessPoolExecutor`:
every point is CPU-bound Python — quantization, Amaranth elaboration, the golden model — plus
the Yosys/nextpnr subprocesses, so separate processes sidestep the GIL and keep Amaranth's and
the WebAssembly tools' global state apart, with nothing to start but the worker processes), or
on a Dask cluster (``dask_address="tcp://HOST:PORT"``): the workers run the same
:func:`run_point` and must have this hwgen installed and see ``OUT`` at the same path (a shared
file system); the results file is written by the submitting process only.
"""

from __future__ import annotations

import csv
import hashlib
import inspect
import io
import itertools
import json
import os
import re
import shutil
import socket
import threading
import time
from pathlib import Path

from .errors import HwgenError

__all__ = ["SweepError", "SpecError", "load_spec", "validate_spec", "points", "run_point", "run_sweep",
           "read_results", "write_tables", "summary", "COLUMNS", "FOLDING_PRESETS"]

RESULTS = "results.jsonl"
DASK_CONNECT_TIMEOUT = "20s"
FOLDING_PRESETS = ("auto", "min")
DONE = ("ok", "does-not-fit")

# Column order of sweep.csv; sweep.md shows a readable subset (_MD_COLUMNS).
COLUMNS = ["point", "key", "source", "act_bits", "weight_bits", "folding", "device", "status",
           "luts", "ffs", "carry", "brams", "dsps", "logic_cells", "logic_cells_available", "fmax_mhz",
           "cycles_per_image", "images_per_s", "golden_accuracy", "message",
           "build_s", "synth_s", "attempt", "finished_at", "host", "build_dir"]
FIGURES = ["luts", "ffs", "carry", "brams", "dsps", "logic_cells", "logic_cells_available", "fmax_mhz",
           "cycles_per_image", "images_per_s", "golden_accuracy"]
_MD_COLUMNS = [("point", "#"), ("source", "source"), ("act_bits", "act"), ("weight_bits", "w"),
               ("folding", "folding"), ("device", "device"), ("status", "status"), ("luts", "LUTs"),
               ("ffs", "FFs"), ("carry", "carry"), ("brams", "BRAM"), ("dsps", "DSP"),
               ("logic_cells", "logic cells"), ("fmax_mhz", "Fmax MHz"), ("cycles_per_image", "cycles/img"),
               ("images_per_s", "img/s"), ("golden_accuracy", "accuracy"), ("message", "note")]

_SPEC_KEYS = ("sources", "act_bits", "weight_bits", "foldings", "folding", "devices", "synth", "base_dir")
_SYNTH_KEYS = {"seed": int, "freq_mhz": (int, float), "dsp": bool, "hierarchy": bool, "bitstream": bool,
               "timeout": (int, float)}
_SYNTH_DEFAULTS = {"seed": 1, "freq_mhz": None, "dsp": True, "hierarchy": True, "bitstream": False,
                   "timeout": 1800}
_RANDOM = re.compile(r"^random:([A-Za-z_][A-Za-z0-9_-]*)(?::(\d+))?$")
_FIT = re.compile(r"design needs|wrapper needs \d+ pins|cells than")

# Building elaborates with Amaranth and its built-in Yosys; points sharing a process (Dask
# thread workers, jobs=1) take turns at that step. Synthesis (subprocesses) overlaps freely.
_BUILD_LOCK = threading.Lock()


class SweepError(HwgenError, ValueError):
    """A sweep that cannot run as asked; the message is one line."""


class SpecError(SweepError):
    """A sweep spec that is not valid; the message is one line naming the key."""


# --------------------------------------------------------------------------- spec

def load_spec(path) -> dict:
    """Read and validate a sweep spec from a ``.toml`` (or ``.json``) file.

    Relative source paths are resolved against the file's folder.  Raises :class:`SpecError`.
    """
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"no sweep spec at {path}")
    text = path.read_text(errors="replace")
    if path.suffix == ".toml":
        import tomllib
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise SpecError(f"{path}: not valid TOML ({_one_line(e)})") from None
    elif path.suffix == ".json":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise SpecError(f"{path}: not valid JSON ({_one_line(e)})") from None
    else:
        raise SpecError(f"{path}: a sweep spec is a .toml file (or .json), not {path.suffix or 'no suffix'}")
    if not isinstance(doc, dict):
        raise SpecError(f"{path}: a sweep spec is a table of keys")
    doc.setdefault("base_dir", str(path.resolve().parent))
    try:
        return validate_spec(doc)
    except SpecError as e:
        raise SpecError(f"{path}: {e}") from None


def validate_spec(spec: dict) -> dict:
    """The spec with defaults filled in; :class:`SpecError` (one line) for anything wrong."""
    from .synth import DEVICES

    if not isinstance(spec, dict):
        raise SpecError(f"a sweep spec is a dict / table of keys, not {type(spec).__name__}")
    unknown = sorted(set(spec) - set(_SPEC_KEYS))
    if unknown:
        raise SpecError(f"unknown key {unknown[0]!r}; a sweep spec has "
                        f"{', '.join(k for k in _SPEC_KEYS if k != 'base_dir')}")
    out = {"base_dir": str(Path(spec.get("base_dir") or ".").resolve())}

    def str_list(key, default=None):
        value = spec.get(key, default)
        if value is None:
            raise SpecError(f"'{key}' is missing: give a list, e.g. {key} = {_EXAMPLES[key]}")
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value:
            raise SpecError(f"'{key}' must be a non-empty list, e.g. {key} = {_EXAMPLES[key]}")
        return value

    sources = str_list("sources")
    for s in sources:
        if not isinstance(s, str) or not s.strip():
            raise SpecError(f"'sources': {s!r} is not a source; use 'embedded', 'random:<kind>[:<seed>]' "
                            f"or a checkpoint / integer model path")
        if s.startswith("random:"):
            m = _RANDOM.match(s)
            if not m:
                raise SpecError(f"'sources': {s!r} is not random:<kind>[:<seed>], e.g. 'random:adder' or 'random:shift:3'")
            kinds = _random_kinds()
            if kinds and m.group(1) not in kinds:
                raise SpecError(f"'sources': {s!r}: no random model of kind {m.group(1)!r}; kinds: {', '.join(kinds)}")
        if s != "embedded" and not s.startswith("random:"):
            p = _resolve(s, out["base_dir"])
            if not p.exists():
                raise SpecError(f"'sources': no checkpoint or integer model at {p}")
    out["sources"] = list(dict.fromkeys(sources))

    for key in ("act_bits", "weight_bits"):
        values = spec.get(key, [8])
        if isinstance(values, int) and not isinstance(values, bool):
            values = [values]
        if not isinstance(values, list) or not values:
            raise SpecError(f"'{key}' must be a non-empty list of bit widths, e.g. {key} = [8, 4]")
        for b in values:
            if isinstance(b, bool) or not isinstance(b, int) or not 2 <= b <= 16:
                raise SpecError(f"'{key}': {b!r} is not a bit width from 2 to 16")
        out[key] = list(dict.fromkeys(values))

    devices = str_list("devices", ["ice40-up5k"])
    for d in devices:
        if d not in DEVICES:
            raise SpecError(f"'devices': unknown device {d!r}; pick from {', '.join(DEVICES)}")
    out["devices"] = list(dict.fromkeys(devices))

    named = spec.get("folding", {})
    if not isinstance(named, dict):
        raise SpecError("'folding' must be a table of named foldings, e.g. [folding.narrow] conv1 = {pe = 1, simd = 3}")
    out["folding"] = {}
    for name, table in named.items():
        if name in FOLDING_PRESETS:
            raise SpecError(f"'folding.{name}': {name!r} is a preset name; call the folding something else")
        out["folding"][name] = _check_folding(table, f"folding.{name}")
    foldings = str_list("foldings", ["auto"])
    out["foldings"] = []
    for f in foldings:
        if isinstance(f, str):
            if f not in FOLDING_PRESETS and f not in out["folding"]:
                raise SpecError(f"'foldings': {f!r} is neither a preset ({', '.join(FOLDING_PRESETS)}) nor "
                                f"a [folding.{f}] table of the spec")
        elif isinstance(f, dict):
            f = _check_folding(f, "foldings")
        else:
            raise SpecError(f"'foldings': {f!r} is not a folding name or a table {{layer = {{pe = N, simd = M}}}}")
        if f not in out["foldings"]:
            out["foldings"].append(f)

    synth = spec.get("synth", {})
    if not isinstance(synth, dict):
        raise SpecError("'synth' must be a table of synthesis options, e.g. [synth] seed = 1")
    for k, v in synth.items():
        if k not in _SYNTH_KEYS:
            raise SpecError(f"'synth': unknown option {k!r}; options: {', '.join(_SYNTH_KEYS)}")
        want = _SYNTH_KEYS[k]
        if (v is None and k != "freq_mhz") or (v is not None and (not isinstance(v, want)
                                                                  or (want is not bool and isinstance(v, bool)))):
            raise SpecError(f"'synth.{k}': {v!r} is not a {getattr(want, '__name__', 'number')}")
    out["synth"] = {**_SYNTH_DEFAULTS, **synth}
    return out


_EXAMPLES = {"sources": '["embedded", "random:adder"]', "devices": '["ice40-up5k", "ecp5-25f"]',
             "foldings": '["auto", "min"]'}


def _check_folding(table, where) -> dict:
    """A folding of the spec, parsed like ``--fold`` (:func:`hwgen.hw.spec.parse_overrides`):
    every key ``--fold`` accepts (``pe``, ``simd``, ``weights``, ``overlap``, ``lanes``)."""
    from .hw.spec import FoldingError, parse_overrides

    if not isinstance(table, dict) or not table:
        raise SpecError(f"'{where}' must be a table {{layer = {{pe = N, simd = M}}}}, got {table!r}")
    try:
        return parse_overrides(table, f"'{where}'")
    except FoldingError as e:
        raise SpecError(str(e)) from None


def _resolve(source: str, base_dir: str) -> Path:
    p = Path(source).expanduser()
    return p if p.is_absolute() else Path(base_dir) / p


def _one_line(e) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


# --------------------------------------------------------------------------- points

def points(spec: dict) -> list[dict]:
    """The cross product of the spec's axes, in order: sources × act_bits × weight_bits ×
    foldings × devices (the last one varies fastest).  Every point is a dict of plain values
    (it travels to Dask workers) with a stable ``key``; duplicates (bit widths of a source
    that is already integer) collapse into one point."""
    spec = validate_spec(spec)
    random_bits = _random_takes_bits()
    digests, out, seen = {}, [], set()
    for source, a, w, fold, device in itertools.product(spec["sources"], spec["act_bits"], spec["weight_bits"],
                                                       spec["foldings"], spec["devices"]):
        kind, path, rkind, rseed = _source_kind(source, spec["base_dir"])
        if kind == "integer" or (kind == "random" and not random_bits):
            a = w = None  # the model's own widths
        if kind == "embedded":  # hwgen.nn.checkpoint.embedded_checkpoint(), without importing torch
            path = str(Path(__file__).resolve().parent / "models" / "digits_adder.pt")
        if path is not None and path not in digests:
            digests[path] = _digest(Path(path)) if Path(path).exists() else None
        if isinstance(fold, str):
            fname = fold
            fspec = fold if fold in FOLDING_PRESETS else spec["folding"][fold]
        else:
            fname = ",".join(f"{layer}:" + "/".join(f"{k}{v}" for k, v in f.items()) for layer, f in fold.items())
            fspec = fold
        params = {"source": source, "source_digest": digests.get(path), "act_bits": a, "weight_bits": w,
                  "folding": fspec, "device": device, "synth": spec["synth"]}
        key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
        if key in seen:
            continue
        seen.add(key)
        slug = "-".join(x for x in (_slug(source), f"a{a}w{w}" if a is not None else "", _slug(fname), device) if x)
        out.append({"point": len(out), "key": key, "source": source, "source_kind": kind,
                    "source_path": path if kind != "embedded" else None,
                    "random_kind": rkind, "random_seed": rseed, "act_bits": a, "weight_bits": w,
                    "folding": fname, "folding_spec": fspec, "device": device, "synth": dict(spec["synth"]),
                    "dir": f"points/{slug[:80]}-{key[:8]}"})
    return out


def _source_kind(source: str, base_dir: str):
    """(kind, absolute path or None, random kind, random seed) of a source string."""
    if source == "embedded":
        return "embedded", None, None, None
    m = _RANDOM.match(source)
    if m:
        return "random", None, m.group(1), int(m.group(2) or 0)
    p = _resolve(source, base_dir).resolve()
    kind = "integer" if p.is_dir() or p.suffix == ".json" else "checkpoint"
    return kind, str(p), None, None


def _digest(path: Path) -> str:
    """Hash of a source's bytes: a changed checkpoint or model is a new point."""
    h = hashlib.sha256()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.name.startswith("model."))
    else:
        npz = path.with_suffix(".npz")
        files = [path] + ([npz] if path.suffix == ".json" and npz.is_file() else [])
    for f in files:
        h.update(f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def _slug(text: str) -> str:
    text = Path(text).stem if ("/" in text or text.endswith((".pt", ".json"))) else text
    return re.sub(r"[^A-Za-z0-9_.]+", "_", text).strip("_")


def _random_generator():
    from . import testmodels
    return testmodels.random_digits_model


def _random_kinds() -> tuple:
    """The kinds :func:`hwgen.testmodels.random_digits_model` builds, if it says (``RANDOM_KINDS``)."""
    try:
        from . import testmodels
        return tuple(getattr(testmodels, "RANDOM_KINDS", ()))
    except ImportError:
        return ()


def _random_takes_bits() -> bool:
    try:
        params = inspect.signature(_random_generator()).parameters
    except (ImportError, AttributeError, TypeError, ValueError):
        return False
    return "act_bits" in params and "weight_bits" in params


# --------------------------------------------------------------------------- one point

def _load_model(point: dict):
    from . import flow

    kind = point["source_kind"]
    if kind == "random":
        fn = _random_generator()
        params = inspect.signature(fn).parameters
        kwargs = {}
        if "kind" in params:
            kwargs["kind"] = point["random_kind"]
        elif point["random_kind"] != "adder":
            raise SweepError(f"source {point['source']!r}: hwgen.testmodels.random_digits_model has no 'kind' "
                             f"argument in this hwgen yet; only random:adder can be built")
        if point["act_bits"] is not None:
            kwargs.update(act_bits=point["act_bits"], weight_bits=point["weight_bits"])
        return fn(point["random_seed"], **kwargs)
    path = point["source_path"] if kind != "embedded" else None
    return flow.load_model(path, act_bits=point["act_bits"] or 8, weight_bits=point["weight_bits"] or 8)


def _min_folding(model) -> dict:
    """The smallest folding of every engine: one PE of one lane (a Winograd tile engine: one
    PE, no second tile buffer)."""
    from .hw.plan import plan
    from .hw.spec import DirectSpec, WinogradSpec

    least = {DirectSpec: {"pe": 1, "simd": 1}, WinogradSpec: {"pe": 1, "overlap": 0}}
    return {s.name: least[type(s)] for s in plan(model).specs if type(s) in least}


def run_point(point: dict, out_dir: str) -> dict:
    """Build and synthesize one point into ``out_dir/point["dir"]``; returns its row.

    Never raises for a failure of the point itself: the row's ``status`` is ``ok``,
    ``does-not-fit`` (the :class:`hwgen.synth.SynthError` text in ``message``) or ``error``
    (the exception in one line).  The same function runs in a local worker process and on a
    Dask worker.
    """
    from . import flow
    from .synth import SynthError, synthesize

    row = {k: point[k] for k in ("point", "key", "source", "act_bits", "weight_bits", "folding", "device")}
    row.update({k: None for k in FIGURES}, status="error", message="", build_s=None, synth_s=None,
               host=socket.gethostname(), build_dir=point["dir"])
    build_dir = Path(out_dir) / point["dir"]
    t0 = time.perf_counter()
    stage = "build"
    try:
        with _BUILD_LOCK:
            model = _load_model(point)
            fspec = point["folding_spec"]
            folding = None if fspec == "auto" else _min_folding(model) if fspec == "min" else fspec
            manifest = flow.build(model, build_dir, device=point["device"], folding=folding)
        row["build_s"] = round(time.perf_counter() - t0, 2)
        row["cycles_per_image"] = manifest.get("cycles_per_image")
        row["golden_accuracy"] = manifest.get("golden_accuracy")
        stage = "synth"
        t1 = time.perf_counter()
        s = point["synth"]
        report = synthesize(build_dir, point["device"], seed=s["seed"], freq_mhz=s["freq_mhz"], dsp=s["dsp"],
                            bitstream=s["bitstream"], hierarchy=s["hierarchy"], timeout=s["timeout"])
        row["synth_s"] = round(time.perf_counter() - t1, 2)
        for k in ("luts", "ffs", "carry", "brams", "dsps", "logic_cells", "logic_cells_available", "fmax_mhz"):
            row[k] = report.get(k)
        if row["fmax_mhz"] and row["cycles_per_image"]:
            row["images_per_s"] = round(row["fmax_mhz"] * 1e6 / row["cycles_per_image"], 1)
        row["status"] = "ok"
    except SynthError as e:
        row["synth_s"] = round(time.perf_counter() - t0 - (row["build_s"] or 0), 2)
        row["status"] = "does-not-fit" if _FIT.search(str(e)) else "error"
        row["message"] = _one_line(e) if row["status"] == "does-not-fit" else f"synth: {_one_line(e)}"
    except Exception as e:  # noqa: BLE001 - a point's failure is its row, the sweep goes on
        row["message"] = f"{stage}: {type(e).__name__}: {_one_line(e)}"
    return row


# --------------------------------------------------------------------------- results

def read_results(out_dir) -> list[dict]:
    """Every row of ``out_dir/results.jsonl`` in the order written (a torn last line is skipped)."""
    path = Path(out_dir) / RESULTS
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "key" in row:
            rows.append(row)
    return rows


class _ResultsFile:
    """Append-only JSON lines, one row per finished point, each flushed and fsync'd."""

    def __init__(self, path: Path):
        self.path = path
        if path.is_file():  # a sweep killed mid-write leaves a torn last line: cut it off
            data = path.read_bytes()
            if data and not data.endswith(b"\n"):
                with open(path, "r+b") as f:
                    f.truncate(data.rfind(b"\n") + 1)
        self.f = open(path, "a", encoding="utf-8")

    def append(self, row: dict) -> None:
        self.f.write(json.dumps(row, sort_keys=False) + "\n")
        self.f.flush()
        os.fsync(self.f.fileno())

    def close(self) -> None:
        self.f.close()


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}" if value < 1 else f"{value:.1f}"
    return str(value)


def write_tables(rows: list[dict], out_dir) -> None:
    """``sweep.csv`` (every column) and ``sweep.md`` (a readable subset) of ``rows``."""
    from .util import atomic_write

    out_dir = Path(out_dir)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in COLUMNS})
    text = buf.getvalue()
    atomic_write(out_dir / "sweep.csv", lambda f: f.write(text))
    lines = ["| " + " | ".join(h for _, h in _MD_COLUMNS) + " |",
             "|" + "|".join("---" if k in ("source", "folding", "device", "status", "message") else "---:"
                            for k, _ in _MD_COLUMNS) + "|"]
    for row in rows:
        cells = [_fmt(row.get(k)).replace("|", "\\|") for k, _ in _MD_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    md = "\n".join(lines) + "\n"
    atomic_write(out_dir / "sweep.md", lambda f: f.write(md))


def summary(rows: list[dict], out_dir=None) -> str:
    """One line for the end of ``hwgen sweep``: how many points ended how, and where the table is."""
    counts = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    parts = [f"{counts[s]} {s}" for s in ("ok", "does-not-fit", "error") if counts.get(s)]
    where = f"; table: {Path(out_dir) / 'sweep.md'}" if out_dir is not None else ""
    again = " (run again to retry the errors)" if counts.get("error") else ""
    return f"{len(rows)} points: {', '.join(parts) or 'none'}{again}{where}"


# --------------------------------------------------------------------------- the sweep

def run_sweep(spec, out_dir, dask_address: str | None = None, jobs: int | None = None,
              progress: bool = True) -> list[dict]:
    """Run every point of ``spec`` (a dict, or a path to a spec file) that has no finished row
    in ``out_dir`` yet; returns the rows of all the spec's points in point order.

    ``jobs``: local worker processes (default: this machine's cores; 1 runs in this process).
    ``dask_address``: run the points on the Dask scheduler there instead (``tcp://HOST:PORT``).
    ``progress``: a ``rich`` progress bar and one line per finished point on stderr.
    """
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise SweepError(f"jobs must be a whole number of at least 1, not {jobs!r}")
    if isinstance(spec, (str, os.PathLike)):
        spec = load_spec(spec)
    spec = validate_spec(spec)
    pts = points(spec)
    out = Path(out_dir).resolve()
    if out.exists() and not out.is_dir():
        raise SweepError(f"{out} exists and is not a folder; pick another --out")
    out.mkdir(parents=True, exist_ok=True)
    lock = _lock(out)
    try:
        _clean_stale(out)
        from .util import atomic_write_json
        atomic_write_json(out / "spec.json", spec)
        previous = read_results(out)
        latest = {r["key"]: r for r in previous}
        attempts = {}
        for r in previous:
            attempts[r["key"]] = attempts.get(r["key"], 0) + 1
        todo = [p for p in pts if latest.get(p["key"], {}).get("status") not in DONE]
        results = _ResultsFile(out / RESULTS)
        bar = _Progress(len(pts), len(pts) - len(todo), enabled=progress)

        def record(point, row):
            row["point"] = point["point"]
            row["attempt"] = attempts.get(point["key"], 0) + 1
            row["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
            results.append(row)
            latest[point["key"]] = row
            bar.advance(point, row)

        try:
            with bar:
                if not todo:
                    pass
                elif dask_address:
                    _run_dask(todo, out, dask_address, record)
                else:
                    _run_local(todo, out, jobs, record)
        finally:
            results.close()
            # point numbers of this spec (a row kept from a run of another spec may have its own)
            rows = [{**latest[p["key"]], "point": p["point"]} for p in pts if p["key"] in latest]
            write_tables(rows, out)
        return rows
    finally:
        lock.close()


def _lock(out: Path):
    f = open(out / ".sweep.lock", "w")
    try:
        import fcntl
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:  # not POSIX: no guard against two sweeps in one folder
        pass
    except OSError:
        f.close()
        raise SweepError(f"another hwgen sweep is running in {out}; wait for it or pick another --out") from None
    return f


def _clean_stale(out: Path) -> None:
    """Temporary build folders of points killed mid-build (flow.build's ``.<name>.building-*``)."""
    pts = out / "points"
    if pts.is_dir():
        for p in pts.glob(".*.building-*"):
            shutil.rmtree(p, ignore_errors=True)


def _error_row(point: dict, e: BaseException) -> dict:
    row = {k: point[k] for k in ("point", "key", "source", "act_bits", "weight_bits", "folding", "device")}
    row.update({k: None for k in FIGURES}, status="error", message=f"worker: {type(e).__name__}: {_one_line(e)}",
               build_s=None, synth_s=None, host=None, build_dir=point["dir"])
    return row


def _default_jobs() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _run_local(todo, out: Path, jobs, record) -> None:
    jobs = min(max(1, int(jobs or _default_jobs())), len(todo))
    if jobs == 1:
        for p in todo:
            record(p, run_point(p, str(out)))
        return
    import concurrent.futures as cf
    import multiprocessing

    # forkserver: workers start from a clean process, not a fork of this one and its threads.
    ctx = multiprocessing.get_context("forkserver")
    pool = cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_worker_init)
    try:
        futures = {pool.submit(run_point, p, str(out)): p for p in todo}
        for fut in cf.as_completed(futures):
            p = futures[fut]
            try:
                row = fut.result()
            except cf.process.BrokenProcessPool:
                raise SweepError(
                    "a local worker process died (killed, out of memory, or a script that calls run_sweep "
                    "with jobs > 1 outside `if __name__ == '__main__':`); finished points are kept, "
                    "run again or use jobs=1") from None
            except Exception as e:  # noqa: BLE001 - the call itself failed, e.g. an unpicklable row
                row = _error_row(p, e)
            record(p, row)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _worker_init() -> None:
    """Linux: a worker process dies with the sweep, so a killed sweep leaves no worker writing."""
    try:
        import ctypes
        import signal
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _run_dask(todo, out: Path, address: str, record) -> None:
    try:
        from dask.distributed import Client, as_completed
    except ImportError:
        raise SweepError("--dask needs dask.distributed: pip install 'dask[distributed]'") from None
    try:
        client = Client(address, timeout=DASK_CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ValueError) as e:
        raise SweepError(f"cannot reach the Dask scheduler at {address}: {_one_line(e)}") from None
    try:
        run = f"{os.getpid()}-{time.time_ns()}"
        futures = {}
        for p in todo:
            fut = client.submit(run_point, p, str(out), key=f"hwgen-sweep-{p['key']}-{run}", pure=False)
            futures[fut.key] = (fut, p)
        for fut in as_completed([f for f, _ in futures.values()]):
            p = futures[fut.key][1]
            try:
                row = fut.result()
            except Exception as e:  # noqa: BLE001 - a worker that died, a lost connection
                row = _error_row(p, e)
            record(p, row)
    finally:
        client.close()


class _Progress:
    """A rich progress bar over the points, with one line per finished point; or nothing."""

    def __init__(self, total: int, done: int, enabled: bool):
        self.total, self.done, self.enabled = total, done, enabled
        self.bar = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
                TimeRemainingColumn
            self.bar = Progress(TextColumn("sweep"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                TimeRemainingColumn(), console=Console(stderr=True))
            self.task = self.bar.add_task("sweep", total=total, completed=done)

    def __enter__(self):
        if self.bar is not None:
            self.bar.__enter__()
            if self.done:
                self.bar.console.print(f"{self.done} of {self.total} points already finished; running the rest")
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)
        return False

    def advance(self, point: dict, row: dict) -> None:
        if self.bar is None:
            return
        bits = f"a{point['act_bits']}w{point['weight_bits']}" if point["act_bits"] is not None else "own bits"
        what = f"#{point['point']} {point['source']} {bits} {point['folding']} {point['device']}"
        if row["status"] == "ok":
            fig = f"{row['luts']} LUT4, {row['fmax_mhz']:.1f} MHz, {row['images_per_s']} img/s" \
                if row.get("fmax_mhz") else f"{row['luts']} LUT4"
        else:
            fig = row["message"]
        self.bar.console.print(f"{what}: {row['status']} ({fig})", markup=False, highlight=False, soft_wrap=True)
        self.bar.advance(self.task)
