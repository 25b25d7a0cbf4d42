"""``hwgen search``: operator choice per layer by measured cost (ShiftAddNAS, with real
place and route).

The space is the ``mixed`` architecture (:mod:`hwgen.nn.models`): every weight layer of the
digits network (each conv block and the dense head) is one of conv, adder, shift, shift-add or
Winograd-adder.  The search is **evolutionary over short training runs**, not a weight-sharing
supernet: every point it reports is then a network trained on its own, with its own batch
norms and scales, which ``hwgen build`` accepts as it is (a supernet's sub-networks share
weights and statistics that must be re-trained or re-calibrated before they are real), and the
five operator families need no common super-layer.  The price is one short training run per
point; on the digits a run of a few epochs takes seconds.

A point's cost is measured, not counted: it is quantized and built (the accelerator the user
would get, at one pace for all points) and then, with ``cost="synth"`` (the default of the
command), synthesized and placed and routed for the device — its LUTs are the tools' own.
``cost="estimate"`` uses the planner's per-engine LUT estimates instead (the arithmetic
engines only: seconds instead of minutes per point; for trying the search out).  Energy is the
operation-count estimate (:func:`hwgen.energy.op_energy`).

The population starts with the five single-kind networks, so the front is always shown beside
them, and random mixtures; each generation keeps the best half by Pareto rank (accuracy up,
LUTs and energy down; crowding distance breaks ties) and fills the rest with children (one
layer's kind changed, or two parents crossed layer by layer).  Points outside ``budget`` are
evaluated and recorded but never on the front.

Everything lands in ``OUT/``: ``points/<kinds>.pt`` (each point's checkpoint), ``builds/<kinds>``
(its build folder), ``search.json`` and ``pareto.png``.  ``search.json``
(``"format": "hwgen-search", "version": 1``)::

    {"format", "version", "device", "cost": "synth" | "estimate", "budget": {"luts", "energy_pj"},
     "target_cycles": int, "epochs", "population", "generations", "seed",
     "points": [{"kinds": [str], "name", "checkpoint", "build", "generation",
                 "float_accuracy", "integer_accuracy", "luts", "fmax_mhz" (synth), "energy_pj",
                 "cycles_per_image", "within_budget": bool, "single_kind": bool,
                 "on_front": bool}],
     "front": [name], "seconds"}
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path

from . import ir
from .errors import HwgenError
from .util import Steps, atomic_write, atomic_write_json

log = logging.getLogger(__name__)

__all__ = ["search", "parse_budget", "pareto_front", "SearchError", "COSTS"]

SEARCH_FORMAT, SEARCH_VERSION = "hwgen-search", 1
COSTS = ("synth", "estimate")
BUDGET_KEYS = {"luts": "luts", "energy": "energy_pj"}


class SearchError(HwgenError, ValueError):
    """A search request a user can mend (one line)."""


def parse_budget(text: str | None) -> dict:
    """``"luts=5000,energy=2e5"`` → ``{"luts": 5000, "energy_pj": 200000.0}`` (energy in pJ
    per inference)."""
    budget: dict = {}
    for item in filter(None, (t.strip() for t in (text or "").split(","))):
        key, eq, value = item.partition("=")
        if not eq or key not in BUDGET_KEYS:
            raise SearchError(f"--budget {item!r}: expected luts=N or energy=PJ, comma-separated")
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if not number > 0 or number == float("inf"):
            raise SearchError(f"--budget {key}={value}: must be a positive number")
        budget[BUDGET_KEYS[key]] = int(number) if key == "luts" else number
    return budget


def dominates(a: dict, b: dict) -> bool:
    """``a`` is at least as good as ``b`` in accuracy, LUTs and energy, and better in one."""
    ka = (-a["integer_accuracy"], a["luts"], a["energy_pj"])
    kb = (-b["integer_accuracy"], b["luts"], b["energy_pj"])
    return all(x <= y for x, y in zip(ka, kb)) and ka != kb


def pareto_front(points: list[dict]) -> list[dict]:
    """The points no other point dominates (:func:`dominates`), in order of LUTs."""
    front = [p for p in points if not any(dominates(q, p) for q in points)]
    return sorted(front, key=lambda p: (p["luts"], -p["integer_accuracy"]))


def _ranked(points: list[dict]) -> list[dict]:
    """``points`` best first: by Pareto rank, then by crowding distance (spread kept)."""
    rest, order = list(points), []
    while rest:
        layer = pareto_front(rest)
        dist = {id(p): 0.0 for p in layer}
        for key in ("integer_accuracy", "luts", "energy_pj"):
            line = sorted(layer, key=lambda p: p[key])
            span = (line[-1][key] - line[0][key]) or 1
            dist[id(line[0])] = dist[id(line[-1])] = float("inf")
            for lo, p, hi in zip(line, line[1:], line[2:]):
                dist[id(p)] += (hi[key] - lo[key]) / span
        order += sorted(layer, key=lambda p: -dist[id(p)])
        rest = [p for p in rest if all(p is not q for q in layer)]
    return order


def search(out_dir, *, device: str = "ice40-up5k", budget: dict | None = None, dataset=None,
           channels=(8, 16), population: int = 8, generations: int = 3, epochs: int = 3,
           seed: int = 0, cost: str = "synth", target_cycles: int | None = None,
           progress: bool = True) -> dict:
    """Search per-layer kind assignments of the ``mixed`` network; returns the ``search.json``
    document (see the module docstring).  ``dataset``: a :class:`hwgen.data.Dataset` (default:
    the digits); ``target_cycles``: the common pace (default: the all-conv network's own)."""
    from .nn.models import MIXED_KINDS
    from .synth import device as device_info

    if cost not in COSTS:
        raise SearchError(f"unknown cost {cost!r}; pick one of {', '.join(COSTS)}")
    for name, value, lo in (("population", population, len(MIXED_KINDS)),
                            ("generations", generations, 0), ("epochs", epochs, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < lo:
            raise SearchError(f"{name} must be an integer >= {lo}, got {value!r}")
    device_info(device)  # an unknown device is refused before any training
    budget = dict(budget or {})
    slots = len(channels) + 1
    out = Path(out_dir)
    (out / "points").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    t0 = time.perf_counter()
    done: dict[tuple, dict] = {}
    pace = {"cycles": target_cycles}

    def evaluate(kinds: tuple, generation: int) -> dict:
        if kinds not in done:
            done[kinds] = _evaluate(kinds, out, device, dataset, list(channels), epochs, seed,
                                    cost, pace, generation)
            p = done[kinds]
            p["within_budget"] = all(p[k] <= v for k, v in budget.items())
            log.info("%s: accuracy %.4f, %s LUTs, %.0f pJ", p["name"], p["integer_accuracy"],
                     p["luts"], p["energy_pj"])
        return done[kinds]

    uniform = [(k,) * slots for k in ("conv", *[k for k in MIXED_KINDS if k != "conv"])]
    pop = list(uniform)
    while len(pop) < population:
        kinds = tuple(rng.choice(MIXED_KINDS) for _ in range(slots))
        if kinds not in pop:
            pop.append(kinds)
    bar = Steps(progress, population * (generations + 1), "search")
    with bar:
        for generation in range(generations + 1):
            for kinds in pop:
                bar.set(",".join(kinds))
                evaluate(kinds, generation)
                bar.advance()
            if generation == generations:
                break
            keep = [tuple(p["kinds"]) for p in _ranked([done[k] for k in pop])][:population // 2]
            children: list[tuple] = []
            for _ in range(100 * population):
                if len(keep) + len(children) >= population:
                    break
                a = rng.choice(keep)
                if rng.random() < 0.5:
                    b = rng.choice(keep)
                    child = tuple(rng.choice(pair) for pair in zip(a, b))
                else:
                    i = rng.randrange(slots)
                    child = a[:i] + (rng.choice([k for k in MIXED_KINDS if k != a[i]]),) + a[i + 1:]
                if child not in done and child not in children:
                    children.append(child)
            pop = keep + children

    points = list(done.values())
    front = pareto_front([p for p in points if p["within_budget"]])
    for p in points:
        p["single_kind"] = len(set(p["kinds"])) == 1
        p["on_front"] = any(p is q for q in front)
    doc = {"format": SEARCH_FORMAT, "version": SEARCH_VERSION, "device": device, "cost": cost,
           "budget": budget, "target_cycles": pace["cycles"], "epochs": epochs,
           "population": population, "generations": generations, "seed": seed,
           "points": points, "front": [p["name"] for p in front],
           "seconds": round(time.perf_counter() - t0, 1)}
    atomic_write_json(out / "search.json", doc)
    atomic_write(out / "pareto.png", lambda f: f.write(plot(doc)), binary=True)
    return doc


def _evaluate(kinds, out, device, dataset, channels, epochs, seed, cost, pace, generation):
    from . import flow
    from .energy import op_energy
    from .nn.train import train

    name = "-".join(kinds)
    ckpt = out / "points" / f"{name}.pt"
    metrics = train(arch="mixed", epochs=epochs, seed=seed, out=ckpt, progress=False,
                    dataset=dataset, config={"kinds": list(kinds), "channels": channels})
    model = flow.load_model(ckpt, dataset=dataset)
    build = out / "builds" / name
    if pace["cycles"] is None:  # the first point (the all-conv network) sets the common pace
        from .compare import pace as common_pace

        pace["cycles"] = common_pace([model])
    manifest = flow.build(model, build, device=device, target_cycles=pace["cycles"],
                          dataset=dataset)
    point = {"kinds": list(kinds), "name": name, "checkpoint": str(ckpt), "build": str(build),
             "generation": generation, "float_accuracy": metrics["test_accuracy"],
             "integer_accuracy": manifest["golden_accuracy"],
             "cycles_per_image": manifest["cycles_per_image"],
             "energy_pj": round(op_energy(model)["total_pj"], 1)}
    if cost == "synth":
        from .synth import synthesize

        rep = synthesize(build, device, bitstream=False, freq_mhz=1)
        point.update(luts=rep["lut4_equivalent"], fmax_mhz=rep["fmax_mhz"], brams=rep["brams"])
    else:
        point["luts"] = estimated_luts(model, pace["cycles"])
    return point


def estimated_luts(model: ir.Model, target_cycles: int | None = None) -> int:
    """The planner's LUT estimate of ``model``'s arithmetic engines at their planned folding."""
    from .hw.plan import candidates, plan
    from .hw.spec import DirectSpec, WinogradSpec

    total = 0
    for spec in plan(model, target_cycles=target_cycles).specs:
        if isinstance(spec, (DirectSpec, WinogradSpec)):
            f = spec.folding
            key = (f.pe, f.overlap) if isinstance(spec, WinogradSpec) else (f.pe, f.simd)
            weights = getattr(f, "weights", "rom")
            cands = candidates(spec, weights) if isinstance(spec, DirectSpec) else candidates(spec)
            total += next(c[1] for c in cands if tuple(c[2:]) == tuple(int(v) for v in key))
    return int(total)


def plot(doc: dict) -> bytes:
    """``pareto.png``: integer accuracy against LUTs, the front joined, single-kind networks
    labelled."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    pts = doc["points"]
    ax.scatter([p["luts"] for p in pts], [p["integer_accuracy"] for p in pts], s=18, c="#bbb",
               label="evaluated")
    front = [p for p in pts if p["on_front"]]
    ax.plot([p["luts"] for p in front], [p["integer_accuracy"] for p in front], "o-",
            c="#1f77b4", label="Pareto front")
    for p in pts:
        if p["single_kind"]:
            ax.scatter([p["luts"]], [p["integer_accuracy"]], marker="s", s=30, c="#d62728")
            ax.annotate(p["kinds"][0], (p["luts"], p["integer_accuracy"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
    if "luts" in doc["budget"]:
        ax.axvline(doc["budget"]["luts"], ls="--", c="#888", lw=1, label="LUT budget")
    what = "LUT4 (placed and routed)" if doc["cost"] == "synth" else "LUTs (planner estimate)"
    ax.set_xlabel(f"{what}, {doc['device']}")
    ax.set_ylabel("integer accuracy")
    ax.set_title(f"per-layer operator search, {doc['target_cycles']} cycles/image")
    ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
