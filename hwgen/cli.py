"""The ``hwgen`` command line.

Every stage reads and writes the build folder (see :mod:`hwgen.flow`), so each can run alone:
``hwgen train`` → ``hwgen build`` → ``hwgen sim`` / ``hwgen synth``; ``hwgen flow`` runs them
all on the embedded model.  A user's mistake ends in one line on stderr and exit status 2;
a failed verification (a mismatch against the golden model) ends with exit status 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .errors import HwgenError

EXIT_USER_ERROR = 2
EXIT_MISMATCH = 1


class UserError(HwgenError):
    """A command-line argument a user can mend; printed as one line."""


def _parse_folding(items: list[str] | None) -> dict | None:
    """``--fold conv1=pe:2,simd:9`` → ``{"conv1": {"pe": 2, "simd": 9}}``
    (:func:`hwgen.hw.spec.parse_fold_items`, the parser of sweep specs too)."""
    from .hw.spec import parse_fold_items

    return parse_fold_items(items, "--fold") if items else None


def _parse_config(items: list[str] | None, arch: str) -> dict | None:
    """``--set mode=q --set channels=[4,8]`` → ``{"mode": "q", "channels": [4, 8]}``.

    Values are JSON where they parse as JSON, else plain strings; the names are checked
    against the architecture's options."""
    if not items:
        return None
    from .nn.models import default_config

    options = default_config(arch)
    config = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise UserError(f"--set {item!r}: expected NAME=VALUE")
        if key not in options:
            raise UserError(f"--set {key}: architecture {arch!r} has no option {key!r}; "
                            f"options: {', '.join(sorted(options))}")
        try:
            config[key] = json.loads(value)
        except json.JSONDecodeError:
            config[key] = value
    return config


def cmd_train(args) -> int:
    from .nn.models import archs
    from .nn.train import train

    if args.arch not in archs():
        raise UserError(f"--arch {args.arch!r} is not supported; supported: {', '.join(archs())}")
    if args.epochs is not None and args.epochs < 1:
        raise UserError("--epochs must be at least 1")
    metrics = train(arch=args.arch, epochs=args.epochs, seed=args.seed, out=args.out, progress=not args.quiet,
                    config=_parse_config(args.set, args.arch), dataset=_dataset(args.data))
    print(json.dumps(metrics, indent=2))
    return 0


def _dataset(path):
    """The data set named by ``--data``, or None (the default: the bundled digits)."""
    if path is None:
        return None
    from . import data

    return data.load(path)


def cmd_build(args) -> int:
    from . import flow

    dataset = _dataset(args.data)
    model = flow.load_model(args.model, act_bits=args.act_bits, weight_bits=args.weight_bits,
                            dataset=dataset)
    if args.board:
        from .boards import build_settings

        if args.device and args.device != build_settings(args.board, model)[0]:
            raise UserError(f"--device {args.device} is not the {args.board}'s; leave it out")
        args.device, args.cycles = build_settings(args.board, model, args.clock, args.cycles)
    manifest = flow.build(model, args.out, device=args.device or "ice40-up5k",
                          folding=_parse_folding(args.fold), target_cycles=args.cycles,
                          dataset=dataset, argmax=not args.no_argmax)
    meta = model.meta
    print(f"built {args.out}: {manifest['top']} ({manifest['verilog']}), "
          f"{manifest['cycles_per_image']} cycles/image, in {manifest['generation_seconds']:.1f} s")
    on = f"the {manifest['data']['name']} test set ({manifest['data']['test']} images)"
    if args.no_argmax:
        print(f"raw output: {manifest['ports']['result']['classes']} values per image, no argmax "
              f"(test vectors from {on})")
    elif "float_accuracy" in meta:
        print(f"accuracy on {on}: float {meta['float_accuracy']:.4f}, "
              f"integer {manifest['golden_accuracy']:.4f}")
    else:
        print(f"integer model accuracy on {on}: {manifest['golden_accuracy']:.4f}")
    if args.board:
        from .boards import build_bitstream

        build_bitstream(args)
    return 0


def cmd_sim(args) -> int:
    from .simulate import format_summary, simulate

    result = simulate(args.dir, simulator=args.simulator, images=args.images,
                      backpressure=args.backpressure, waves=args.waves, seed=args.seed)
    print(format_summary(result))
    return 0 if not result["mismatches"] and result.get("passed", True) else EXIT_MISMATCH


def cmd_synth(args) -> int:
    from .flow import read_manifest
    from .synth import format_summary, synthesize

    device = args.device or read_manifest(args.dir).get("device") or "ice40-up5k"
    report = synthesize(args.dir, device, seed=args.seed, freq_mhz=args.freq, abc9=args.abc9, dsp=not args.no_dsp,
                        hierarchy=not args.flat)
    print(format_summary(report))
    return 0


def cmd_compare(args) -> int:
    from .compare import compare, format_table

    archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    sim = None if args.simulator == "none" else args.simulator
    if args.images < 1:
        raise UserError("--images must be at least 1")
    doc = compare(args.out, archs, device=args.device, source=args.source, simulator=sim, images=args.images,
                  seed=args.seed, epochs=args.epochs, jobs=args.jobs, progress=not args.quiet,
                  cycles=int(args.cycles) if args.cycles.isdigit() else args.cycles, dsp=not args.no_dsp)
    print(format_table(doc))
    print(f"table: {Path(args.out) / 'compare.md'}, rows: {Path(args.out) / 'compare.json'}")
    return EXIT_MISMATCH if any(r["status"] == "MISMATCH" for r in doc["rows"]) else 0


def _channels(text: str) -> list[int]:
    try:
        channels = [int(c) for c in text.split(",")]
    except ValueError:
        channels = []
    if not channels or min(channels) < 1:
        raise UserError(f"--channels {text!r}: expected positive integers, e.g. 8,16")
    return channels


def cmd_search(args) -> int:
    from .search import parse_budget, search

    doc = search(args.out, device=args.device, budget=parse_budget(args.budget),
                 dataset=_dataset(args.data), population=args.population,
                 channels=_channels(args.channels),
                 generations=args.generations, epochs=args.epochs, seed=args.seed, cost=args.cost,
                 target_cycles=args.cycles, progress=not args.quiet)
    front = {p["name"]: p for p in doc["points"] if p["on_front"]}
    print(f"{len(doc['points'])} networks evaluated on {doc['device']} at "
          f"{doc['target_cycles']} cycles/image; Pareto front (accuracy, LUTs, energy):")
    for name in doc["front"]:
        p = front[name]
        print(f"  {','.join(p['kinds']):40s} {p['integer_accuracy']:.4f}  {p['luts']:6d} LUT  "
              f"{p['energy_pj']:9.0f} pJ  {p['checkpoint']}")
    print(f"points: {Path(args.out) / 'search.json'}, plot: {Path(args.out) / 'pareto.png'}")
    return 0


def cmd_report(args) -> int:
    from .report import write_report

    out = Path(args.out or args.builds[0])
    doc = write_report(out, args.builds if len(args.builds) > 1 else args.builds[0], device=args.device)
    print(f"wrote {out / 'report.html'}, {out / 'report.md'}, {out / 'report.json'} "
          f"({len(doc['variants'])} variant(s), {len(doc['figures'])} figures)")
    for v in doc["variants"]:
        for note in v.get("notes", []):
            print(f"  {v['name']}: {note}")
    return 0


def cmd_energy(args) -> int:
    from . import ir
    from .energy import format_energy, fpga_energy, op_energy
    from .buildfolder import BuildFolder
    from .flow import read_manifest

    read_manifest(args.dir)
    ops = op_energy(ir.Model.load(args.dir))
    device = args.device or read_manifest(args.dir).get("device") or "ice40-up5k"
    synthesized = BuildFolder(args.dir).synth_dir(device).is_dir()
    fpga = fpga_energy(args.dir, device, vcd=args.vcd) if synthesized else None
    print(format_energy(ops, fpga))
    if fpga is None:
        print(f"(no FPGA estimate: run `hwgen synth {args.dir} --device {device}` and "
              f"`hwgen sim {args.dir} --waves` first)")
    return 0


def cmd_sweep(args) -> int:
    from .sweep import run_sweep, summary

    if args.jobs is not None and args.jobs < 1:
        raise UserError("--jobs must be at least 1")
    rows = run_sweep(args.spec, args.out, dask_address=args.dask, jobs=args.jobs, progress=not args.quiet)
    print(summary(rows, args.out))
    return 1 if any(r.get("status") == "error" for r in rows) else 0


def cmd_doctor(args) -> int:
    from .toolchain import doctor, print_doctor

    rows = doctor()
    print_doctor(rows)
    return 0 if all(row.ok for row in rows) else EXIT_USER_ERROR


def cmd_flow(args) -> int:
    """The main job: embedded (or given) model → build → simulate → synthesize."""
    out = Path(args.out)
    steps = [
        ["build", *([args.model] if args.model else []), "--out", str(out), "--device", args.device,
         *(["--data", args.data] if args.data else [])],
        ["sim", str(out), "--simulator", args.simulator, "--images", str(args.images)],
        ["synth", str(out), "--device", args.device],
    ]
    flags = ["-q"] if args.quiet else ["-v"] * args.verbose
    for step in steps:
        print(f"$ hwgen {' '.join(step)}", flush=True)
        status = main([*step, *flags])
        if status:
            return status
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hwgen", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # Every command, the boards' too, takes -v / -q (after the command name).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=0,
                        help="say what each step does (-v), and its details (-vv)")
    common.add_argument("-q", "--quiet", action="store_true",
                        help="errors only: no progress bar, no step messages")
    add_parser = sub.add_parser
    sub.add_parser = lambda *a, **kw: add_parser(*a, parents=[common, *kw.pop("parents", [])], **kw)

    p = sub.add_parser("train", help="train a model on a data set (default: the bundled digits)")
    p.add_argument("--arch", default="adder", help="network family (default: adder)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the arch's own)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="checkpoint to write (.pt)")
    p.add_argument("--data", default=None, metavar="D.npz",
                   help="data set: x (N×C×H×W), y, optional classes/split (default: the digits)")
    p.add_argument("--set", action="append", metavar="NAME=VALUE",
                   help="architecture option, e.g. --set kernel=5,3 --set padding=2,1 --set "
                        "input_size=12x16 --set mode=q (repeatable)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("build", help="quantize a model and write its Verilog, test vectors and manifest")
    p.add_argument("model", nargs="?", default=None,
                   help="checkpoint (.pt), torch.export program (.pt2, loading runs no code), "
                        "path.py:function returning the module (runs that file), or integer model "
                        "(folder or model.json); default: the embedded model")
    p.add_argument("--out", required=True, help="build folder to write")
    p.add_argument("--data", default=None, metavar="D.npz",
                   help="data set for calibration and test vectors (default: the digits)")
    p.add_argument("--device", default=None,
                   help="target device recorded for 'hwgen synth' (default: ice40-up5k)")
    p.add_argument("--act-bits", type=int, default=8)
    p.add_argument("--weight-bits", type=int, default=8)
    p.add_argument("--fold", action="append", metavar="LAYER=pe:N,simd:M",
                   help="override a layer's folding (repeatable): conv/dense pe, simd, "
                        "weights:rom|const; Winograd pe, overlap:0|1; max-pool lanes")
    p.add_argument("--cycles", type=int, default=None, metavar="N",
                   help="pace the automatic folding to N cycles per image (default: the fastest that fits)")
    from .boards import add_build_options
    add_build_options(p)
    p.add_argument("--no-argmax", action="store_true",
                   help="the output is not a classification: stream the last layer's values out "
                        "(no argmax) and report no accuracy")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("sim", help="prove the Verilog bit-exact against the golden model in cocotb")
    p.add_argument("dir", help="build folder")
    p.add_argument("--simulator", choices=["icarus", "verilator"], default="icarus")
    p.add_argument("--images", type=int, default=20, help="test images to stream (default: 20)")
    p.add_argument("--backpressure", action="store_true", help="random gaps on input valid and output ready")
    p.add_argument("--waves", action="store_true", help="dump waveforms")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_sim)

    p = sub.add_parser("synth", help="synthesize, place and route with Yosys + nextpnr and report utilization and Fmax")
    p.add_argument("dir", help="build folder")
    p.add_argument("--device", default=None, help="ice40-up5k, ice40-hx8k, ecp5-25f, ecp5-85f (default: the build's)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--freq", type=float, default=None, help="target clock in MHz")
    p.add_argument("--abc9", action="store_true", help="use Yosys's abc9 flow")
    p.add_argument("--no-dsp", action="store_true", help="do not infer DSP blocks")
    p.add_argument("--flat", action="store_true",
                   help="flatten the whole design (default: keep one module per engine for per-layer LUTs)")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("doctor", help="list the tools hwgen uses, their versions, and how to install missing ones")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("report", help="report.json/.md/.html of one build or several compared builds")
    p.add_argument("builds", nargs="+", help="build folder(s)")
    p.add_argument("--out", default=None, help="folder for the report (default: the first build folder)")
    p.add_argument("--device", default=None, help="synthesis results to show (default: the first each build has)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("energy", help="energy estimates of a build: op counts (45 nm) and FPGA (utilization × activity)")
    p.add_argument("dir", help="build folder")
    p.add_argument("--device", default=None, help="default: the build's device")
    p.add_argument("--vcd", default=None, help="waveform to read (default: the one `hwgen sim --waves` recorded)")
    p.set_defaults(func=cmd_energy)

    p = sub.add_parser("sweep", help="design-space sweep: bit widths × foldings × devices × models, each point synthesized")
    p.add_argument("spec", help="sweep spec (.toml; see benchmarks/sweep_example.toml)")
    p.add_argument("--out", required=True, help="sweep folder (results.jsonl, sweep.csv, sweep.md; resumable)")
    p.add_argument("--dask", default=None, metavar="tcp://HOST:PORT", help="run the points on a Dask cluster")
    p.add_argument("--jobs", type=int, default=None, help="local parallel points (default: the machine's cores)")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("compare", help="build the digits network as conv, adder, shift, shift-add and "
                                       "Winograd-adder, side by side")
    p.add_argument("--out", default="build/compare", help="folder for the builds and the table")
    p.add_argument("--archs", default="conv,adder,shift,shiftadd,winograd-adder",
                   help="families, comma-separated (with adder and winograd-adder both: a per-layer "
                        "direct-vs-Winograd table)")
    p.add_argument("--device", default="ice40-hx8k", help="default: ice40-hx8k (no DSPs: every product in LUTs)")
    p.add_argument("--no-dsp", action="store_true", help="do not infer DSP blocks (multipliers in LUTs)")
    p.add_argument("--source", choices=["shipped", "train", "random"], default="shipped",
                   help="models: the shipped checkpoints, trained now, or random weights (cost only)")
    p.add_argument("--simulator", choices=["icarus", "verilator", "none"], default="icarus",
                   help="verify each build against the golden model first (default: icarus)")
    p.add_argument("--images", type=int, default=4,
                   help="test images per simulation (waves are recorded for the energy estimate)")
    p.add_argument("--jobs", type=int, default=2, help="synthesis runs in parallel")
    p.add_argument("--cycles", default="match",
                   help="pace of every variant: 'match' (the slowest variant's, so all have the same "
                        "throughput; default), 'auto' (each its fastest), or N cycles per image")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=None, help="with --source train")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("search", help="choose each layer's operator (conv, adder, shift, shift-add, "
                                      "Winograd-adder) by measured cost: the Pareto front")
    p.add_argument("--out", default="build/search", help="folder for the points, search.json, pareto.png")
    p.add_argument("--device", default="ice40-up5k", help="device the points are built and placed for")
    p.add_argument("--budget", default=None, metavar="luts=N[,energy=PJ]",
                   help="points above it are recorded but kept off the front")
    p.add_argument("--data", default=None, help="data set (.npz; default: the bundled digits)")
    p.add_argument("--cost", choices=["synth", "estimate"], default="synth",
                   help="LUTs from place and route (default) or from the planner's estimate (fast)")
    p.add_argument("--population", type=int, default=8)
    p.add_argument("--generations", type=int, default=3)
    p.add_argument("--epochs", type=int, default=3, help="training epochs per point")
    p.add_argument("--channels", default="8,16", help="channels of the conv blocks (default: 8,16)")
    p.add_argument("--cycles", type=int, default=None,
                   help="common pace, cycles per image (default: the all-conv network's own)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("flow", help="build, simulate and synthesize in one go (default: the embedded model)")
    p.add_argument("model", nargs="?", default=None, help="as for 'hwgen build'")
    p.add_argument("--out", default="build/digits")
    p.add_argument("--data", default=None, metavar="D.npz", help="data set (default: the digits)")
    p.add_argument("--device", default="ice40-up5k")
    p.add_argument("--simulator", choices=["icarus", "verilator"], default="icarus")
    p.add_argument("--images", type=int, default=20)
    p.set_defaults(func=cmd_flow)

    from .boards import add_commands as add_board_commands
    add_board_commands(sub)
    return parser


def _configure_logging(verbose: int, quiet: bool) -> None:
    """Messages of the library (``logging.getLogger("hwgen....")``) go to stderr: warnings by
    default, steps with ``-v``, details with ``-vv``, errors only with ``-q``."""
    logger = logging.getLogger("hwgen")
    if not any(getattr(h, "_hwgen_cli", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("hwgen: %(message)s"))
        handler._hwgen_cli = True
        logger.addHandler(handler)
    logger.setLevel(logging.ERROR if quiet else
                    {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG))


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    _configure_logging(args.verbose, args.quiet)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("hwgen: interrupted", file=sys.stderr)
        return 130
    except (HwgenError, FileNotFoundError) as e:
        # FileNotFoundError: the operating system's own word for a path the user named.
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if isinstance(e, FileNotFoundError) and e.filename:
            message = f"no such file: {e.filename}"
        print(f"hwgen: error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
