"""Compile, run and report SpiNNaker models from the shell (``tvm-spinn`` or ``python -m tvm_spinn``).

    tvm-spinn compile MODEL.{pt2,onnx} --calibration X.npy -o MODEL.so [--replicas N|auto] [--input-bits 8]
    tvm-spinn run MODEL.so INPUT.npy [INPUT2.npy ...] -o OUTPUT.npy [--board ADDRESS] [--plot DIR]
    tvm-spinn report MODEL.so [--plot DIR] [--format svg]
    tvm-spinn bench [--quick] [-- bench_board.py options]

A ``.pt2`` is an ExportedProgram saved by ``torch.export.save``; export it with a dynamic
batch (``dynamic_shapes``) for a module that takes any batch size. Errors end as one line
on stderr and exit code 1 (2: wrong arguments); ``--debug`` shows the traceback.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .errors import ModelFileError, SpinnakerError

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("tvm_spinn")


def _offload_path(module: Path) -> Path:
    """Where compile records what went where (an exported library keeps only the board part)."""
    return module.with_name(module.name + ".offload.json")


def _load_model(path: Path):
    """The Relax IRModule of a .pt2 (torch.export.save) or .onnx file."""
    import tvm_spinn

    if not path.is_file():
        raise ModelFileError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return tvm_spinn.from_onnx(path)
    if suffix in (".pt2", ".pt", ".ep"):
        import torch

        try:
            exported = torch.export.load(str(path))
        except Exception as exc:  # a zip that is not an ExportedProgram, a torch.save file, ...
            raise ModelFileError(f"{path}: not an ExportedProgram saved by torch.export.save "
                                 f"({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''})"
                                 ) from exc
        return tvm_spinn.from_torch(exported)
    raise ModelFileError(f"{path}: unknown model kind {suffix or '(no suffix)'!r}; give a .pt2 (torch.export.save) "
                         "or an .onnx file")


def _need_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise ModelFileError(f"{what} {path}: no such file")


def _need_directory(path: Path, what: str) -> None:
    """Before any work: the directory a result goes to exists (else the whole build or run
    would end in a linker's or numpy's error)."""
    parent = path.resolve().parent
    if not parent.is_dir():
        raise ModelFileError(f"{what} {path}: the directory {parent} does not exist; create it first")


def _replicas(text: str):
    """--replicas: a number of copies >= 1, or "auto"."""
    if text == "auto":
        return text
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of copies >= 1, or auto")
    return int(text)


def _load_array(path: Path, what: str) -> np.ndarray:
    _need_file(path, what)
    try:
        array = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise ModelFileError(f"{what} {path}: not a .npy array ({type(exc).__name__})") from exc
    if not isinstance(array, np.ndarray):
        raise ModelFileError(f"{what} {path}: an .npz archive; give one .npy array per input")
    if array.dtype == np.float64:  # numpy's default; the models take float32
        log.info("%s %s is float64: converted to float32", what, path)
        array = array.astype(np.float32)
    return array


def cmd_compile(args: argparse.Namespace) -> int:
    import tvm_spinn

    out = args.output or args.model.with_suffix(".so")
    _need_directory(out, "output")
    mod = _load_model(args.model)
    names = [p.name for p in mod["main"].params]
    if len(args.calibration) != len(names):
        raise ModelFileError(f"{args.model} takes {len(names)} input(s) ({', '.join(names)}), given "
                             f"{len(args.calibration)} calibration file(s): give one .npy per input, in that order")
    calibration = [_load_array(p, "calibration") for p in args.calibration]
    ex = tvm_spinn.build(mod, calibration=calibration, board=args.board_kind, strict=args.strict,
                         replicas=args.replicas, input_bits=args.input_bits)
    ex.export_library(str(out))
    summary = getattr(ex, "spinnaker_offload", None)
    if summary is not None:
        _offload_path(out).write_text(json.dumps(dataclasses.asdict(summary), indent=1) + "\n")
    print(tvm_spinn.report.offload_report(ex))
    print(f"written {out}")
    return 0


def _load_module(path: Path):
    import tvm

    import tvm_spinn  # noqa: F401  (registers the "spinnaker" module loader)

    if not path.is_file():
        raise ModelFileError(f"module {path}: no such file")
    if path.suffix.lower() not in (".so", ".tar", ".dylib", ".dll"):
        raise ModelFileError(f"module {path}: not an exported module (.so); write one with 'tvm-spinn compile' "
                             "or ex.export_library")
    try:
        return tvm.runtime.load_module(str(path))
    except SpinnakerError:
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        first = first if len(first) < 120 else first[:117] + "..."
        raise ModelFileError(f"module {path} cannot be loaded ({first}); give a module written by "
                             "'tvm-spinn compile' or ex.export_library") from exc


def cmd_run(args: argparse.Namespace) -> int:
    for path in args.inputs:  # before TVM's import: a typo fails at once
        _need_file(path, "input")
    _need_directory(args.output, "output")
    import tvm
    from tvm import relax

    import tvm_spinn

    if args.board is not None:  # read when the VM links the module's functions
        os.environ[tvm_spinn.runtime.BOARD_ENV] = args.board
    lib = _load_module(args.module)
    inputs = [_load_array(p, "input") for p in args.inputs]
    vm = relax.VirtualMachine(lib, tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(np.ascontiguousarray(x)) for x in inputs])
    outs = [out.numpy()] if isinstance(out, tvm.runtime.Tensor) else [o.numpy() for o in out]
    if len(outs) == 1:
        if args.output.suffix != ".npy":  # np.save adds .npy: say the name it writes
            args.output = args.output.with_name(args.output.name + ".npy")
        np.save(args.output, outs[0])
        shapes = f"{outs[0].shape} {outs[0].dtype}"
    else:  # several results: one archive, out0, out1, ... (numpy adds .npz to another suffix)
        if args.output.suffix != ".npz":
            args.output = args.output.with_name(args.output.name + ".npz")
        np.savez(args.output, **{f"out{k}": o for k, o in enumerate(outs)})
        shapes = ", ".join(f"out{k} {o.shape} {o.dtype}" for k, o in enumerate(outs))
    stats = tvm_spinn.statistics(vm)
    print(stats.summary() if stats is not None else "nothing ran on SpiNNaker")
    print(f"written {args.output}: {shapes}")
    if args.plot is not None:  # after the call: the plots show its link load and per-layer figures
        _write_plots(vm, args.plot, args.format)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from types import SimpleNamespace

    import tvm_spinn
    from tvm_spinn.codegen.offload import OffloadSummary

    lib = _load_module(args.module)
    record = _offload_path(args.module)
    if record.is_file():
        saved = json.loads(record.read_text())  # JSON has no tuples: make the pairs tuples again
        known = {f.name for f in dataclasses.fields(OffloadSummary)}
        summary = OffloadSummary(**{k: v for k, v in saved.items() if k in known})
        summary.board, summary.host = [tuple(b) for b in summary.board], [tuple(h) for h in summary.host]
        print(tvm_spinn.report.offload_report(SimpleNamespace(spinnaker_offload=summary)))
        print()
    print(tvm_spinn.report.model_report(lib))
    if args.plot is not None:  # nothing ran: placement and tiling, no link load
        _write_plots(lib, args.plot, args.format)
    return 0


def _write_plots(obj, directory: Path, fmt: str) -> None:
    """The plots of ``obj`` (a module, or a VM after its call) as files in ``directory``."""
    from .report import plots

    for path in plots.save_plots(obj, directory, fmt=fmt):
        print(f"written {path}")


def _add_plot_options(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--plot", type=Path, metavar="DIR", help=f"also write the plots into DIR ({what})")
    p.add_argument("--format", choices=("png", "svg", "pdf"), default="png", help="the plots' file format (png)")


def cmd_bench(args: argparse.Namespace) -> int:
    script = ROOT / "benchmarks" / "bench_board.py"
    if not script.is_file():
        raise SpinnakerError(f"bench runs benchmarks/bench_board.py of a source checkout; there is none in {ROOT}")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from benchmarks import bench_board

    argv = list(args.bench_args)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if args.quick:  # one small model, one small batch: about half a minute
        argv = ["--models", "mlp784", "--batch", "64", "--repeat", "1"] + argv
    program, sys.argv[0] = sys.argv[0], "tvm-spinn bench"  # what bench_board's usage and errors say
    try:
        return int(bench_board.main(argv) or 0)
    finally:
        sys.argv[0] = program


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="tvm-spinn", description=__doc__.split("\n\n")[0],
                                 epilog="Errors print one line; --debug shows the traceback.")
    ap.add_argument("--debug", action="store_true", help="show the traceback of an error")
    ap.add_argument("-q", "--quiet", action="store_true", help="print only results and warnings")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("compile", help="build a .pt2 or .onnx model and write an exported module")
    p.add_argument("model", type=Path, help=".pt2 (torch.export.save) or .onnx file")
    p.add_argument("-c", "--calibration", type=Path, nargs="+", required=True, metavar="X.npy",
                   help="representative inputs, samples on axis 0 (one .npy per model input)")
    p.add_argument("-o", "--output", type=Path, help="the module to write (default: MODEL with .so)")
    p.add_argument("--board-kind", choices=("spinn5", "spinn5x3", "spinn3"), default="spinn5",
                   help="the machine to map onto (default spinn5, 48 chips; spinn5x3: three boards, 144 chips)")
    p.add_argument("--strict", action="store_true",
                   help="fail if an offloaded part cannot be built, instead of keeping it on the host")
    p.add_argument("--replicas", type=_replicas, default=1, metavar="N",
                   help="copies of the model on the machine, a batch spread over them (default 1; auto: of "
                        "the most that fit and halving counts, the one with the best modelled throughput)")
    p.add_argument("--input-bits", type=int, choices=(16, 8), default=16,
                   help="bits per input value on the host link (default 16; 8: for 8-bit data such as images, "
                        "half the bytes)")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("run", help="run an exported module on inputs from .npy files")
    p.add_argument("module", type=Path, help="a module written by compile (or ex.export_library)")
    p.add_argument("inputs", type=Path, nargs="+", metavar="INPUT.npy", help="one .npy per model input")
    p.add_argument("-o", "--output", type=Path, required=True, help=".npy to write (.npz for several results)")
    p.add_argument("--board", metavar="ADDRESS",
                   help="as TVM_SPINN_BOARD: emulator (default), a hostname, spalloc://server, double://host:port")
    _add_plot_options(p, "placement with the call's link load, per-layer figures, tiling")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("report", help="what a module puts on the board, and what stays on the host")
    p.add_argument("module", type=Path)
    _add_plot_options(p, "placement and tiling; 'run --plot' adds what a call did")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("bench", help="run benchmarks/bench_board.py (timed emulation vs llvm and PyTorch)")
    p.add_argument("--quick", action="store_true", help="the MLP only, batch 64, one repeat")
    p.add_argument("bench_args", nargs=argparse.REMAINDER, help="options for bench_board.py (after --)")
    p.set_defaults(func=cmd_bench)
    return ap


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = parser()
    args, rest = ap.parse_known_args(argv)
    if rest and args.command == "bench":  # bench_board.py's options, with or without "--" before them
        args.bench_args = rest + list(args.bench_args)
    elif rest:
        ap.parse_args(argv)  # argparse's usage error for what no command takes
    # The build's "what went where" line and warnings, on stderr, under the tvm_spinn logger.
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("tvm_spinn").setLevel(logging.WARNING if args.quiet else logging.INFO)
    from tqdm.contrib.logging import logging_redirect_tqdm

    try:
        with logging_redirect_tqdm():  # a log line printed while a bar shows goes above the bar, not into it
            return args.func(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("tvm-spinn: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one line, never a traceback (unless --debug)
        if args.debug:
            raise
        text = " ".join(str(exc).split()) or type(exc).__name__
        kind = "" if isinstance(exc, SpinnakerError) else f"{type(exc).__name__}: "
        print(f"tvm-spinn: error: {kind}{text}" + ("" if isinstance(exc, SpinnakerError) else
                                                    " (--debug shows where)"), file=sys.stderr)
        return 1


def entry_point() -> None:
    """The ``tvm-spinn`` console script."""
    sys.exit(main())

