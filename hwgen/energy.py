"""Energy *estimates* of an integer model and of its FPGA build — estimates, not measurements.

Two independent estimates, each with the source of every constant it uses:

1. **Operation counts × published per-operation energies** (:func:`op_counts`,
   :func:`op_energy`).  From the integer model alone: per layer, how many additions,
   absolute differences, shifts, multiplications and comparisons of which bit width one
   inference performs, times the 45 nm energies of Horowitz (ISSCC 2014) that the AdderNet
   and ShiftAddNet papers use, and ShiftAddNet's shift energies.  This is the figure of
   merit of those papers (an ASIC view of the arithmetic); it ignores memory, control and
   data movement.

2. **FPGA estimate from utilization and switching activity** (:func:`fpga_energy`).  The
   toggles of every net in a waveform of the cocotb run (a VCD) give each engine's switching
   activity; the synthesis report gives its logic cells, block RAMs and DSPs and the Fmax;
   a per-device coefficient model (``DEVICE_COEFFICIENTS``) turns them into dynamic
   energy per image, plus static power × time per image at the reported Fmax.

Op-count rules (the hardware of :mod:`hwgen.hw` does exactly this work, never skipping a
zero weight):

==================  ===========================================================================
layer kind          operations per inference (``L`` output pixels, ``O`` outputs, ``K`` taps)
==================  ===========================================================================
adder_conv2d/dense  ``L·O·K`` absdiff (subtract + abs) at the difference width;
                    ``L·O·(K-1)`` add at the accumulator width (the layer's output range)
shift_conv2d/dense  ``L·O·K`` shift of the input (``x << p``) at the input width;
                    ``L·O·(K-1)`` add (add or subtract: the sign) at the accumulator width
conv2d/dense        ``L·O·K`` mult (input width × weight width); ``L·O·(K-1)`` add
requant             per element of channel ``c``: one shift per canonical-signed-digit term of
                    ``mult[c]`` with a non-zero power, ``terms`` adds (the terms and the bias),
                    one shift right by ``shift`` (if non-zero), two compares (the clamp)
maxpool2d           ``size²-1`` compares per output element, at the element width
flatten             nothing (wiring)
==================  ===========================================================================

``winograd_adder_conv2d`` (``T`` tiles of 2×2 outputs): per tile and input channel the input
transform's adds (and one shift per ``±2`` entry), ``16·T·C·O`` absdiff, ``16·T·O·(C-1)``
accumulating adds, per tile and output channel the output transform's adds; see
:meth:`hwgen.kinds.WinogradAdderConv2d.ops`, and :func:`winograd_vs_direct` for the comparison
with the direct form of the same layer.

Each layer kind counts its own operations (its ``ops`` method, in its :mod:`hwgen.kinds`
module); a new kind plugs in there.

Energy of one operation, :class:`EnergyTable`: the table's anchor widths are exact; between
two anchors the energy is interpolated linearly in ``bits`` for adders and shifters and in
``bits²`` for multipliers (an array multiplier has ``bits²`` partial-product cells); below the
smallest / above the largest anchor it scales proportionally (``E(w) = E(a)·w/a`` or
``·(w/a)²``).  An absdiff costs two adds of its width (subtract, then conditional negate);
a compare costs one add (a subtractor).  A multiplier of unequal operand widths ``a×b`` is
priced as ``sqrt(a·b)`` squared, i.e. proportional to ``a·b``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from . import ir
from .buildfolder import BuildFolder
from .errors import HwgenError
from .kinds import OP_TYPES, Op

__all__ = [
    "EnergyError", "EnergyTable", "HOROWITZ_45NM", "OP_TYPES", "Op",
    "op_counts", "op_energy", "winograd_vs_direct",
    "DeviceCoefficients", "Coefficient", "DEVICE_COEFFICIENTS",
    "vcd_toggles", "fpga_energy", "format_energy",
]

class EnergyError(HwgenError, ValueError):
    """An energy estimate that cannot be made (missing report or waveform); one line."""


# --------------------------------------------------------------------------- energy table

@dataclass(frozen=True)
class EnergyTable:
    """Energy per operation, pJ, at anchor bit widths, with the source of every anchor."""

    name: str
    add: dict[int, float]
    mult: dict[int, float]
    shift: dict[int, float]
    sources: dict[str, str]
    rule: str = ("adders and shifters linear in bit width, multipliers linear in bits² (∝ a·b "
                 "for a×b), between the anchors; proportional beyond them; absdiff = 2 adds, "
                 "compare = 1 add")

    @staticmethod
    def _interp(anchors: dict[int, float], x: float, power: int) -> float:
        pts = sorted((w ** power, e) for w, e in anchors.items())
        if x <= pts[0][0]:
            return pts[0][1] * x / pts[0][0]
        if x >= pts[-1][0]:
            return pts[-1][1] * x / pts[-1][0]
        for (x0, e0), (x1, e1) in zip(pts, pts[1:]):
            if x0 <= x <= x1:
                return e0 + (e1 - e0) * (x - x0) / (x1 - x0)
        raise AssertionError("unreachable")

    def energy(self, op: str, bits) -> float:
        """pJ of one ``op`` of width ``bits`` (an int, or ``(a, b)`` for a multiplier)."""
        try:
            anchors, power, times = _PRICING[op]
        except KeyError:
            raise ValueError(f"unknown operation {op!r}; one of {', '.join(OP_TYPES)}") from None
        a, b = (bits, bits) if isinstance(bits, int) else bits
        x = float(a * b) if power == 2 else float(bits)
        return times * self._interp(getattr(self, anchors), x, power)

    def to_json(self) -> dict:
        return {"name": self.name, "add_pj": {str(k): v for k, v in self.add.items()},
                "mult_pj": {str(k): v for k, v in self.mult.items()},
                "shift_pj": {str(k): v for k, v in self.shift.items()},
                "sources": dict(self.sources), "rule": self.rule}


#: How each op type is priced: ``(anchors, power, times)``: ``times`` × the table ``anchors``
#: interpolated in ``bits ** power``.
_PRICING = {"add": ("add", 1, 1), "compare": ("add", 1, 1), "absdiff": ("add", 1, 2),
            "shift": ("shift", 1, 1), "mult": ("mult", 2, 1)}


_HOROWITZ = ("M. Horowitz, \"Computing's energy problem (and what we can do about it)\", "
             "ISSCC 2014, Digest of Technical Papers, pp. 10-14, Fig. 1.1.9 (45 nm, 0.9 V): "
             "integer add 8 bit 0.03 pJ, 32 bit 0.1 pJ; integer mult 8 bit 0.2 pJ, 32 bit 3.1 pJ. "
             "The same figures are Table 1 of AdderNet (Chen et al., CVPR 2020) and of ShiftAddNet. "
             "Checked against two independent transcriptions of the table (a Horowitz-based energy "
             "script and a published parameter table citing it).")
_SHIFTADDNET = ("H. You et al., \"ShiftAddNet: A Hardware-Inspired Deep Network\", NeurIPS 2020, "
                "Table 1, 45 nm ASIC column: shift INT8 0.024 pJ, INT16 0.057 pJ, INT32 0.13 pJ. "
                "NOT VERIFIED here: the stored copies of the paper this workplace could search show "
                "only its abstract; the values are as recalled from the table — check them against "
                "the paper before quoting.")

HOROWITZ_45NM = EnergyTable(
    name="horowitz-45nm",
    add={8: 0.03, 32: 0.1},
    mult={8: 0.2, 32: 3.1},
    shift={8: 0.024, 16: 0.057, 32: 0.13},
    sources={"add": _HOROWITZ, "mult": _HOROWITZ, "shift": _SHIFTADDNET,
             "absdiff": "2 × add of the difference width (rule of this module)",
             "compare": "1 × add of the operand width (rule of this module)"},
)


# --------------------------------------------------------------------------- op counts

@dataclass
class Op:
    op: str           # one of OP_TYPES
    bits: object      # int, or (a, b) for mult
    count: int

    def key(self):
        return self.op, self.bits if isinstance(self.bits, int) else tuple(self.bits)


def _bits_label(bits) -> str:
    return str(bits) if isinstance(bits, int) else f"{bits[0]}x{bits[1]}"


def op_counts(model: ir.Model) -> list[dict]:
    """Operations of one inference, per layer: ``[{layer, kind, label, ops: [{op, bits, count}],
    by_type: {op: count}}]`` (``label``: the kind's name in reports); ``bits`` is an int, or
    ``"AxB"`` for a multiplier."""
    in_shapes, out_shapes = model.in_shape_lists(), model.shapes()
    in_ranges, out_ranges = model.in_range_lists(), model.value_ranges()
    rows = []
    for i, layer in enumerate(model.layers):
        try:
            counted = layer.ops_of(in_shapes[i], out_shapes[i], in_ranges[i], out_ranges[i])
        except NotImplementedError:
            raise EnergyError(f"no op counter for layer kind {layer.kind!r} (layer {layer.name!r}); "
                              f"define ops() in its hwgen.kinds module") from None
        merged: dict = {}
        for op in counted:
            merged[op.key()] = merged.get(op.key(), 0) + int(op.count)
        ops = [{"op": k[0], "bits": k[1] if isinstance(k[1], int) else _bits_label(k[1]), "count": n}
               for k, n in sorted(merged.items(), key=lambda kv: (OP_TYPES.index(kv[0][0]), str(kv[0][1])))]
        by_type = {t: sum(o["count"] for o in ops if o["op"] == t) for t in OP_TYPES}
        rows.append({"layer": layer.name, "kind": layer.kind, "label": layer.label, "ops": ops,
                     "by_type": by_type})
    return rows


def winograd_vs_direct(model: ir.Model) -> list[dict]:
    """Per Winograd-adder layer of ``model`` (any kind with a direct form): its op counts against
    the direct AdderNet form of the same layer (3×3 kernel, same padding, same input and output
    shapes).

    ``[{layer, winograd: {op: count}, direct: {op: count}, absdiff_ratio, add_ratio}]`` where the
    direct form does, per output pixel and channel, ``9C`` absdiff and ``9C - 1`` adds; the ratios
    are direct / Winograd (2.25 for the absdiffs when the output size is even; the Winograd adds
    include the input and output transforms).
    """
    rows = []
    counts = {r["layer"]: r for r in op_counts(model)}
    for layer, in_shape, out_shape in zip(model.layers, model.in_shapes(), model.shapes()):
        direct = layer.direct_ops(in_shape, out_shape)
        if direct is None:
            continue
        wino = dict(counts[layer.name]["by_type"])
        rows.append({"layer": layer.name, "winograd": wino, "direct": direct,
                     "absdiff_ratio": direct["absdiff"] / max(1, wino["absdiff"]),
                     "add_ratio": direct["add"] / max(1, wino["add"])})
    return rows


def _parse_bits(bits):
    if isinstance(bits, int):
        return bits
    a, b = str(bits).split("x")
    return int(a), int(b)


def op_energy(model: ir.Model, table: EnergyTable = HOROWITZ_45NM) -> dict:
    """Per-layer and per-inference energy estimate from :func:`op_counts` × ``table``.

    Returns ``{"estimate", "method", "table", "layers": [{layer, kind, ops: [{op, bits,
    count, pj_each, pj}], pj_by_op, pj}], "ops_by_type", "pj_by_op", "total_pj"}``.
    """
    layers = []
    for row in op_counts(model):
        ops = []
        for o in row["ops"]:
            each = table.energy(o["op"], _parse_bits(o["bits"]))
            ops.append({**o, "pj_each": each, "pj": each * o["count"]})
        pj_by_op = {t: sum(o["pj"] for o in ops if o["op"] == t) for t in OP_TYPES}
        layers.append({"layer": row["layer"], "kind": row["kind"], "label": row["label"],
                       "ops": ops, "by_type": row["by_type"],
                       "pj_by_op": pj_by_op, "pj": sum(pj_by_op.values())})
    return {
        "estimate": True,
        "method": "operation counts × published per-operation energies (45 nm ASIC view of the arithmetic; "
                  "memory, control and data movement not included)",
        "model": model.name,
        "table": table.to_json(),
        "layers": layers,
        "ops_by_type": {t: sum(l["by_type"][t] for l in layers) for t in OP_TYPES},
        "pj_by_op": {t: sum(l["pj_by_op"][t] for l in layers) for t in OP_TYPES},
        "total_pj": sum(l["pj"] for l in layers),
    }


# --------------------------------------------------------------------------- FPGA coefficients

@dataclass(frozen=True)
class Coefficient:
    value: float
    unit: str
    source: str
    assumption: bool = False   # True: an engineering assumption, not a published figure

    def to_json(self) -> dict:
        return {"value": self.value, "unit": self.unit, "source": self.source, "assumption": self.assumption}


_ICE40_POWER = ("tinyvision-ai-inc/ice40_power (GitHub), README 'Results' table: core-rail current of an "
                "iCE40 UltraPlus (UP5K) on the Lattice iCE40 UltraPlus Breakout Board, measured with a "
                "Joulescope JS110, VCC core 1.219 V")


@dataclass(frozen=True)
class DeviceCoefficients:
    """Coefficient model of one device family: dynamic energy per toggle / cycle / access and static power.

    Per image: ``cycles × [Σ_engines (α_e · cells_e · toggle + busy_e · brams_e · bram_duty ·
    bram_access) + clock_cycle + dsps · dsp_cycle · min(1, 2α)] + static_w · cycles / f``, where
    ``α_e`` is the engine's toggles per net bit per cycle and ``busy_e`` the fraction of cycles
    in which it toggles at all.
    """

    family: str
    vcc: float
    toggle: Coefficient        # J per toggle of a logic cell's output, its routing included
    clock_cycle: Coefficient   # J per clock cycle of the global clock network (any design size)
    bram_access: Coefficient   # J per block-RAM access
    bram_duty: Coefficient     # accesses per busy cycle of its engine, per block RAM
    dsp_cycle: Coefficient     # J per active DSP per cycle
    static_w: Coefficient      # W of the core supply, configured, clock stopped

    def to_json(self) -> dict:
        return {"family": self.family, "vcc": self.vcc,
                **{k: getattr(self, k).to_json() for k in
                   ("toggle", "clock_cycle", "bram_access", "bram_duty", "dsp_cycle", "static_w")}}


# iCE40 UltraPlus, from the measurements in _ICE40_POWER:
#  * static: "Blank design" row, core 85.6 uA × 1.219 V = 104 uW.
#  * clock network: "External 12 MHz + 28 bit counter (32 LC's)" 613.5 uA minus blank 85.6 uA
#    = 527.9 uA at 12 MHz → 527.9e-6 × 1.219 / 12e6 = 53.6 pJ per cycle (the 32-LC counter's own
#    share is small: see the next rows).
#  * per cell toggle: "28*8 bit counter (228 LC's)" 641.3 uA minus "28 bit counter (32 LC's)"
#    613.5 uA = 27.8 uA for 196 more LCs at 12 MHz → 2.82 pJ per cycle → 14.4 fJ per LC per
#    cycle.  A 28-bit binary counter flips 2 bits per cycle on average (1 + 1/2 + 1/4 + ...),
#    so 2/28 = 0.071 output toggles per LC per cycle → 14.4 / 0.071 ≈ 200 fJ per toggle, the
#    FF clock-pin load folded in.  (The "Math (no DSP)" row, 351 uA for 180 more LCs of an
#    8×8 multiplier at 12 MHz = 198 fJ per LC per cycle, agrees within the ~2× this is worth.)
#  * DSP: "Math (1 DSP)" 882 uA vs the 28-LC counter 645 uA at 12 MHz → 237 uA → 24 pJ per
#    cycle for one DSP plus 44 LCs; about 20 pJ per active DSP cycle.
#  * BRAM: not in those measurements (listed as future work there) → assumption below.
ICE40_UP = DeviceCoefficients(
    family="ice40", vcc=1.219,
    toggle=Coefficient(200e-15, "J/toggle", _ICE40_POWER + ": counter rows 32→228 LCs at 12 MHz, "
                       "(641.3-613.5) uA × 1.219 V / 12 MHz / 196 LC / (2/28 toggles per LC per cycle); "
                       "derivation of this module (±2×)"),
    clock_cycle=Coefficient(53.6e-12, "J/cycle", _ICE40_POWER + ": (613.5-85.6) uA × 1.219 V / 12 MHz, "
                            "'External 12 MHz + 28 bit counter' minus 'Blank design'"),
    bram_access=Coefficient(10e-12, "J/access", "engineering assumption: Horowitz ISSCC 2014 gives 10 pJ "
                            "for a 64-bit read of an 8 KB SRAM at 45 nm; an iCE40 4 Kbit EBR read of "
                            "≤16 bits is smaller, so 10 pJ is taken as an upper bound", assumption=True),
    bram_duty=Coefficient(1.0, "accesses/busy cycle", "engineering assumption: every block RAM of an engine "
                          "is accessed once in each cycle in which that engine is busy (its busiest net "
                          "toggles, measured from the VCD); an upper bound", assumption=True),
    dsp_cycle=Coefficient(20e-12, "J/cycle", _ICE40_POWER + ": 'Math (1 DSP)' 882 uA minus the 28-LC "
                          "counter 645 uA at 12 MHz = 24 pJ/cycle for one DSP and 44 LCs; derivation of "
                          "this module", assumption=True),
    static_w=Coefficient(85.6e-6 * 1.219, "W", _ICE40_POWER + ": 'Blank design' core 85.6 uA × 1.219 V"),
)

# ECP5: no published per-resource figures were found from this workplace; every coefficient is
# the iCE40 one scaled by (1.1 V / 1.219 V)² for the lower core voltage, and the static power is
# an order-of-magnitude assumption.  Treat ECP5 figures as rough.
_ECP5_SCALE = (1.1 / 1.219) ** 2
ECP5 = DeviceCoefficients(
    family="ecp5", vcc=1.1,
    toggle=Coefficient(ICE40_UP.toggle.value * _ECP5_SCALE, "J/toggle",
                       "engineering assumption: the iCE40 UltraPlus figure scaled by (1.1/1.219)² "
                       "(core VCC); no ECP5 per-toggle figure verified", assumption=True),
    clock_cycle=Coefficient(ICE40_UP.clock_cycle.value * _ECP5_SCALE * 4, "J/cycle",
                            "engineering assumption: iCE40 clock network figure × (1.1/1.219)² × 4 "
                            "(a ~4× larger die and clock tree); not verified", assumption=True),
    bram_access=Coefficient(20e-12, "J/access", "engineering assumption: a DP16KD (18 Kbit) read, "
                            "2× the iCE40 EBR assumption", assumption=True),
    bram_duty=ICE40_UP.bram_duty,
    dsp_cycle=Coefficient(ICE40_UP.dsp_cycle.value * _ECP5_SCALE, "J/cycle",
                          "engineering assumption: iCE40 DSP figure scaled by (1.1/1.219)²", assumption=True),
    static_w=Coefficient(30e-3, "W", "engineering assumption: order of magnitude of an ECP5-25F/85F "
                         "core's static power at 25 °C; not verified against the ECP5 datasheet or "
                         "Lattice Power Calculator", assumption=True),
)

DEVICE_COEFFICIENTS = {"ice40": ICE40_UP, "ecp5": ECP5}


# --------------------------------------------------------------------------- VCD toggles

_RANGE = re.compile(r"\[\d+:\d+\]$")


def _split_ref(reference: str, scopes: set) -> tuple[str, str]:
    """``"a.b.name[7:0]"`` → ``("a.b", "name")``: the longest declared scope path that prefixes
    the reference, and the variable name without its bit range (names may hold dots: Amaranth
    names a struct field ``payload.scores``; vcdvcd joins ``name [7:0]`` into ``name[7:0]``)."""
    name = _RANGE.sub("", reference)
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        scope = ".".join(parts[:cut])
        if scope in scopes:
            return scope, ".".join(parts[cut:])
    return "", name


def _is_view(name: str, declared: set) -> bool:
    """True when ``name`` is a field (``p.f``) or element (``p[3]``) view of a declared ``p``."""
    for i, ch in enumerate(name):
        if ch in ".[" and i and name[:i] in declared:
            return True
    return False


def vcd_toggles(path, skip_scopes: tuple[str, ...] = ("$rootio",)) -> dict:
    """Toggle counts of every net of a VCD file, read with `vcdvcd`'s streaming parser.

    Returns ``{"nets": {code: {"refs": [(scope, name), ...], "bits", "toggles", "busy"}},
    "scopes", "end_time", "begin_time", "timescale_s"}``; ``busy`` counts the distinct time
    steps at which the net toggled.  A toggle is one bit changing between two known (0/1)
    values; changes from or to ``x``/``z`` are not counted.  Nets that are views of another
    net's bits in the same scope (Amaranth's struct fields ``p.f``, Verilator's array elements
    ``p[3]``) and nets only in ``skip_scopes`` (Verilator's ``$rootio`` copy of the ports) are
    dropped, so no bit counts twice.
    """
    try:
        import vcdvcd
    except ImportError:  # pragma: no cover - a declared dependency
        raise EnergyError("the VCD parser is missing: pip install vcdvcd") from None
    path = Path(path)
    if not path.is_file():
        raise EnergyError(f"no waveform at {path}; run `hwgen sim --waves` first")
    if path.suffix != ".vcd":
        raise EnergyError(f"{path.name}: only VCD waveforms are read (Icarus writes FST); "
                          f"run `hwgen sim --simulator verilator --waves`")

    toggles: dict[str, int] = {}
    busy: dict[str, int] = {}
    last: dict[str, int] = {}

    class Counter(vcdvcd.StreamParserCallbacks):
        def value(self, vcd, time, value, identifier_code, cur_sig_vals):
            old = cur_sig_vals.get(identifier_code, "x")
            if old == value or value[:1] in "rR" or old[:1] in "rR":
                return
            try:
                diff = int(old, 2) ^ int(value, 2)
            except ValueError:  # x or z on either side
                return
            if diff:
                toggles[identifier_code] = toggles.get(identifier_code, 0) + diff.bit_count()
                if last.get(identifier_code) != time:
                    last[identifier_code] = time
                    busy[identifier_code] = busy.get(identifier_code, 0) + 1

    try:
        vcd = vcdvcd.VCDVCD(str(path), callbacks=Counter(), store_tvs=False, store_scopes=True)
    except Exception as e:  # vcdvcd raises bare Exceptions on malformed files
        raise EnergyError(f"{path}: not a readable VCD ({e})") from None

    scopes = set(vcd.scopes)
    declared: dict[str, set] = {}
    split = {}
    for code, sig in vcd.data.items():
        for ref in sig.references:
            split[ref] = scope, name = _split_ref(ref, scopes)
            declared.setdefault(scope, set()).add(name)
    nets = {}
    for code, sig in vcd.data.items():
        refs = []
        for ref in sig.references:
            scope, name = split[ref]
            if scope.split(".")[0] in skip_scopes or _is_view(name, declared.get(scope, set())):
                continue
            refs.append((scope, name))
        if refs:
            nets[code] = {"refs": refs, "bits": int(sig.size), "toggles": toggles.get(code, 0),
                          "busy": busy.get(code, 0)}
    ts = vcd.timescale.get("timescale")
    return {"nets": nets, "scopes": sorted(scopes), "end_time": vcd.endtime, "begin_time": vcd.begintime,
            "timescale_s": float(ts) if ts is not None else None}


def _engine_of(scope: str, top: str) -> str:
    """The engine owning a net: the instance right below the top (``top.conv0.pe0`` → ``conv0``)."""
    parts = scope.split(".")
    return parts[1] if len(parts) >= 2 and parts[0] == top else "top"


# --------------------------------------------------------------------------- FPGA estimate

def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise EnergyError(what) from None
    except json.JSONDecodeError as e:
        raise EnergyError(f"{path}: not valid JSON ({e})") from None


def _find_vcd(build: Path) -> Path:
    for sim in ("verilator", "icarus"):
        f = BuildFolder(build).sim_summary(sim)
        if f.is_file():
            waves = json.loads(f.read_text()).get("waves")
            if waves and Path(waves).suffix == ".vcd" and Path(waves).is_file():
                return Path(waves)
    found = sorted(BuildFolder(build).sim_dir("*").glob("*.vcd"))
    if found:
        return found[0]
    raise EnergyError(f"{build}: no VCD waveform; run `hwgen sim {build} --simulator verilator --waves` first")


def fpga_energy(build_dir, device: str, vcd=None, coefficients: DeviceCoefficients | None = None) -> dict:
    """FPGA energy per image of a synthesized, simulated build folder (an *estimate*).

    ``vcd``: the waveform to read (default: the one ``hwgen sim --waves`` recorded).  Needs
    ``synth/<device>/report.json`` (``hwgen synth``) and ``manifest.json``.  Engine activity
    ``α`` = bit toggles ÷ (net bits × cycles) over the simulated run; energy per image is for
    the steady state, ``cycles_per_image`` (manifest) cycles at the reported Fmax.
    """
    build = Path(build_dir)
    folder = BuildFolder(build)
    manifest = _read_json(folder.manifest_file, f"{build}: not an hwgen build folder (no {folder.MANIFEST})")
    synth_file = folder.synth_report(device)
    synth = _read_json(synth_file, f"{build}: no synthesis report for {device}; run `hwgen synth {build} "
                                   f"--device {device}` first")
    family = synth.get("family") or ("ice40" if device.startswith("ice40") else "ecp5")
    coef = coefficients or DEVICE_COEFFICIENTS[family]
    vcd_path = Path(vcd) if vcd is not None else _find_vcd(build)
    waves = vcd_toggles(vcd_path)

    top = manifest.get("top", "hwgen_top")
    engine_list = [e["name"] for e in manifest.get("engines", [])]
    clock_nets = [c for c, n in waves["nets"].items() if (top, "clk") in n["refs"]]
    if not clock_nets:
        raise EnergyError(f"{vcd_path}: no {top}.clk in the waveform")
    run_cycles = waves["nets"][clock_nets[0]]["toggles"] / 2
    if run_cycles <= 0:
        raise EnergyError(f"{vcd_path}: the clock never toggles")

    per_engine: dict[str, dict] = {}
    for code, net in waves["nets"].items():
        if code in clock_nets or any(name in ("clk", "rst") for _, name in net["refs"]):
            continue  # the clock is priced per cycle; reset is static during the run
        owners = sorted({_engine_of(scope, top) for scope, _ in net["refs"]})
        share = 1 / len(owners)
        for owner in owners:
            d = per_engine.setdefault(owner, {"bits": 0.0, "toggles": 0.0, "busy": 0})
            d["bits"] += net["bits"] * share
            d["toggles"] += net["toggles"] * share
            d["busy"] = max(d["busy"], net["busy"])

    logic_cells = synth.get("logic_cells") or max(synth.get("luts", 0), synth.get("ffs", 0))
    fmax = synth.get("fmax_mhz") or synth.get("freq_target_mhz")
    if not fmax:
        raise EnergyError(f"{synth_file}: no Fmax reported")
    cycles_img = float(manifest.get("cycles_per_image") or run_cycles)
    t_img = cycles_img / (fmax * 1e6)
    summary = _read_json(folder.summary, "") if folder.summary.is_file() else {}
    modules = (summary.get("synth", {}).get(device, {}) or {}).get("modules") or synth.get("modules")
    total_bits = sum(d["bits"] for d in per_engine.values()) or 1.0
    brams_of: dict[str, float] = {}
    if modules:
        cells_src = (f"{build / 'report.json'} ['synth']['{device}']['modules'] (Yosys per-engine LUT4s / FFs; "
                     f"cells = max(LUTs, FFs) per engine, scaled to nextpnr's logic-cell total; '(glue)' = top)")
        norm = {("top" if k == "(glue)" else k): (v if isinstance(v, dict) else {"luts": v})
                for k, v in modules.items()}
        raw = {k: max(v.get("luts", 0), v.get("ffs", 0)) for k, v in norm.items()}
        scale = logic_cells / max(1, sum(raw.values()))
        cells = {e: raw.get(e, 0) * scale for e in per_engine}
        brams_of = {e: float(norm.get(e, {}).get("brams", 0)) for e in per_engine}
    else:
        cells_src = (f"{synth_file} logic_cells, apportioned to engines by their share of RTL net bits "
                     f"(no per-module utilization in the report) — an approximation")
        cells = {e: logic_cells * d["bits"] / total_bits for e, d in per_engine.items()}
    total_brams = float(synth.get("brams", 0))
    if sum(brams_of.values()) != total_brams:  # no per-engine split: share by cells
        brams_of = {e: total_brams * c / max(1e-9, sum(cells.values())) for e, c in cells.items()}

    layers_of = {e["name"]: e.get("layers", [e["name"]]) for e in manifest.get("engines", [])}
    rows, dyn_logic_total = [], 0.0
    bram_each = cycles_img * coef.bram_duty.value * coef.bram_access.value
    bram_j = 0.0
    for name in [*engine_list, *sorted(set(per_engine) - set(engine_list))]:
        if name not in per_engine:
            continue
        d = per_engine[name]
        alpha = d["toggles"] / (d["bits"] * run_cycles) if d["bits"] else 0.0
        busy = min(1.0, d["busy"] / run_cycles)
        logic_j = cycles_img * alpha * cells[name] * coef.toggle.value
        engine_bram_j = brams_of.get(name, 0.0) * busy * bram_each
        dyn_logic_total += logic_j
        bram_j += engine_bram_j
        rows.append({"engine": name, "layers": layers_of.get(name, []), "net_bits": round(d["bits"], 1),
                     "toggles_run": round(d["toggles"]), "activity": alpha, "busy": busy,
                     "cells": round(cells[name], 1), "brams": round(brams_of.get(name, 0.0), 2),
                     "logic_pj": logic_j * 1e12, "bram_pj": engine_bram_j * 1e12})
    clock_j = cycles_img * coef.clock_cycle.value
    total_cells = sum(r["cells"] for r in rows) or 1.0
    mean_alpha = sum(r["activity"] * r["cells"] for r in rows) / total_cells
    dsp_j = cycles_img * synth.get("dsps", 0) * coef.dsp_cycle.value * min(1.0, 2 * mean_alpha)
    static_j = coef.static_w.value * t_img
    shared = clock_j + dsp_j + static_j
    for r in rows:  # clock, DSP and static power shared by logic-cell share
        r["shared_pj"] = shared * 1e12 * r["cells"] / total_cells
        r["pj"] = r["logic_pj"] + r["bram_pj"] + r["shared_pj"]
    shared += bram_j
    total = dyn_logic_total + shared
    sim_json = next((folder.sim_summary(s) for s in ("verilator", "icarus")
                     if folder.sim_summary(s).is_file()), None)
    return {
        "estimate": True,
        "method": "switching activity (VCD toggles) × utilization × per-device coefficients, plus static "
                  "power × time per image at Fmax; glitches, I/O and configuration power not modelled",
        "device": device, "family": family,
        "coefficients": coef.to_json(),
        "inputs": {"vcd": str(vcd_path), "synth_report": str(synth_file), "manifest": str(folder.manifest_file),
                   "sim_report": str(sim_json) if sim_json else None, "cells": cells_src},
        "run_cycles": run_cycles, "cycles_per_image": cycles_img, "fmax_mhz": fmax,
        "time_per_image_s": t_img, "logic_cells": logic_cells,
        "brams": synth.get("brams", 0), "dsps": synth.get("dsps", 0),
        "engines": rows,
        "pj_by_part": {"logic": dyn_logic_total * 1e12, "clock": clock_j * 1e12, "bram": bram_j * 1e12,
                       "dsp": dsp_j * 1e12, "static": static_j * 1e12},
        "total_pj": total * 1e12,
        "power_mw": total / t_img * 1e3 if t_img else None,
    }


# --------------------------------------------------------------------------- terminal

def _pj(v: float) -> str:
    if v >= 1e6:
        return f"{v / 1e6:.2f} µJ"
    if v >= 1e3:
        return f"{v / 1e3:.2f} nJ"
    return f"{v:.2f} pJ"


def format_energy(ops: dict | None = None, fpga: dict | None = None) -> str:
    """Readable lines of :func:`op_energy` and/or :func:`fpga_energy` results."""
    lines = []
    if ops:
        lines.append(f"energy estimate, op counts × {ops['table']['name']} (per inference): {_pj(ops['total_pj'])}")
        lines.append(f"  {'layer':<12} {'kind':<14} {'add':>9} {'absdiff':>9} {'shift':>9} {'mult':>9} "
                     f"{'compare':>9} {'energy':>10}")
        for l in ops["layers"]:
            b = l["by_type"]
            lines.append(f"  {l['layer']:<12} {l['kind']:<14} {b['add']:>9} {b['absdiff']:>9} {b['shift']:>9} "
                         f"{b['mult']:>9} {b['compare']:>9} {_pj(l['pj']):>10}")
        lines.append("  by op: " + ", ".join(f"{t} {_pj(v)}" for t, v in ops["pj_by_op"].items() if v))
    if fpga:
        lines.append(f"energy estimate, FPGA {fpga['device']} (per image, {fpga['cycles_per_image']:.0f} cycles "
                     f"at {fpga['fmax_mhz']:.1f} MHz): {_pj(fpga['total_pj'])} "
                     f"(≈ {fpga['power_mw']:.2f} mW)")
        lines.append("  " + ", ".join(f"{k} {_pj(v)}" for k, v in fpga["pj_by_part"].items()))
        for r in fpga["engines"]:
            lines.append(f"  {r['engine']:<12} activity {r['activity']:.3f}, {r['cells']:.0f} cells, "
                         f"{_pj(r['pj'])}")
    return "\n".join(lines)
