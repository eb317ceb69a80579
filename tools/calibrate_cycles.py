#!/usr/bin/env python3
"""Calibrate the cycle model (tvm_spinn/tiling/cycle_model.py) from ARM instruction traces.

    python tools/calibrate_cycles.py            # fit, write the calibration, then check it
    python tools/calibrate_cycles.py --check    # check the committed calibration only
    [--json PATH] [--jobs N]

Fit: every tile of :func:`fit_cases` is traced by ``tools/arm_cycles.py`` (the ``.aplx``
build's flags, ARM968E-S costs per executed instruction), once with a user event a packet
and once with :data:`BURST` packets an event (a stream: the drain takes them in one event).
Per kernel kind: send per packet out, the traced average; the FIQ split between every
packet in and each user event (the FIQ raises the event), and the drain with the receive
split between every packet in, each packet on the receive's general (longer) path (the
kernel counts them, ``rx_general``: the first of an input channel's block, the one
completing an input row) and each user event, relative least-squares fits; event: spin1
scheduling the event (traced) plus the FIQ's and the drain's share of it; the compute
constants (per MAC, int32 block, output value, completed sample), a non-negative
least-squares fit of each case's traced compute cycles to the counts the kernel itself
reports. They are written to ``tvm_spinn/tiling/cycle_calibration.json``.

Check: the tiles of :func:`check_cases` (other shapes than the fit's) are traced and the
model's cycles for each (with the user events the trace has, both ways) are
compared with the trace, all in and compute alone; more than :data:`TOLERANCE` apart
fails (exit 1). Exit 2 when the ARM tools are missing.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import sys
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CALIBRATION = ROOT / "tvm_spinn" / "tiling" / "cycle_calibration.json"
TOLERANCE = 0.15
# packets a user event in the traces of a stream (tools/arm_cycles.py --burst): the drain
# takes them in one event, as a core does when packets come within its poll window
BURST = 16
COMPUTE_TERMS = ("mac", "block", "output", "compute")
# the kernel's own counters (spinn_counters_t; "computes": completed samples), as the emulator reads them
COUNT_OF = {"mac": "macs", "block": "blocks", "output": "outputs", "compute": "computes"}


def _arm_cycles():
    spec = importlib.util.spec_from_file_location("arm_cycles", ROOT / "tools" / "arm_cycles.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def fit_cases(t) -> list:
    """Tiles the constants are fitted to: several shapes per kind (rows, columns, channels,
    image sizes), a few samples each."""
    out = []
    for i, (rows, cols) in enumerate([(32, 64), (16, 400), (64, 32), (8, 128), (48, 200)]):
        out.append(t.dense_tile_case("dense_tile_i32", rows, cols, 2, False, 100 + i))
        out.append(t.dense_tile_case("dense_tile_i64", rows, cols, 2, True, 110 + i))
    for i, (rows, groups) in enumerate([(32, 2), (64, 4), (16, 8), (100, 3)]):
        out.append(t.dense_reduce_case(rows, groups, 2, 120 + i))
    # the tensor kernels also with their input from several producers sending at once (their
    # packets in turn: the entry lookups), as most tiles of a model get it
    for i, (c_in, size, c_out, n, k) in enumerate([(8, 8, 8, 2, 1), (16, 10, 16, 1, 1), (4, 12, 8, 2, 1),
                                                   (3, 16, 4, 3, 1), (24, 6, 12, 1, 1), (2, 6, 2, 4, 1),
                                                   (8, 8, 8, 1, 4), (16, 6, 8, 1, 16), (12, 6, 6, 1, 3)]):
        out.append(t.conv_case("conv_tile", c_in, size, c_out, False, n, 130 + i, producers=k))
    for i, (c, size, n, k) in enumerate([(16, 10, 1, 1), (8, 8, 2, 1), (4, 14, 1, 1), (32, 6, 1, 1), (2, 6, 4, 1),
                                         (16, 6, 1, 8), (12, 6, 1, 12)]):
        out.append(t.conv_case("conv_tile_depthwise", c, size, c, True, n, 140 + i, producers=k))
    for i, (c, size, k) in enumerate([(8, 16, 1), (4, 8, 1), (16, 12, 1), (8, 8, 8), (16, 6, 4)]):
        out.append(t.pool_case(c, size, 2, 150 + i, producers=k))
    for i, (c, size, n, k) in enumerate([(8, 8, 2, 1), (4, 12, 2, 1), (16, 6, 2, 1), (3, 5, 1, 1), (8, 6, 1, 4),
                                         (16, 4, 1, 16)]):
        out.append(t.add_case(c, size, n, 160 + i, producers=k))
    for i, (n_oc, size, groups) in enumerate([(8, 8, 3), (4, 6, 2), (16, 8, 2)]):
        out.append(t.conv_reduce_case(n_oc, size, groups, 2, 170 + i))
    return out


def check_cases(t) -> list:
    """Tiles the calibration is checked on: arm_cycles' quick set and shapes the fit has not seen."""
    return t.cases(quick=True) + [
        t.dense_tile_case("dense_tile_i32", 24, 96, 2, False, 201),
        t.dense_tile_case("dense_tile_i64", 40, 48, 1, True, 202),
        # odd rows: the two-row dot product runs the last row twice (the cheapest on ARMv5TE),
        # which the counted MACs leave out; the check keeps that error in sight
        t.dense_tile_case("dense_tile_i32", 5, 64, 2, False, 301),
        t.dense_tile_case("dense_tile_i64", 7, 48, 2, True, 302),
        t.dense_reduce_case(48, 3, 1, 203),
        t.conv_case("conv_tile", 6, 9, 10, False, 1, 204),
        t.conv_case("conv_tile", 10, 8, 6, False, 1, 304, producers=5),
        t.conv_case("conv_tile_depthwise", 12, 8, 12, True, 1, 205),
        t.conv_case("conv_tile_depthwise", 10, 6, 10, True, 1, 305, producers=10),
        t.pool_case(6, 10, 1, 206),
        t.pool_case(6, 8, 1, 306, producers=6),
        t.add_case(6, 10, 1, 207),
        t.add_case(6, 6, 1, 307, producers=3),
        t.conv_reduce_case(6, 7, 3, 1, 208),
    ]


def both_bursts(cases: list) -> list:
    """Every case as traced with a user event a packet and with BURST packets an event."""
    return list(cases) + [dataclasses.replace(c, burst=BURST) for c in cases]


def _case_figures(t, case, result) -> dict:
    f = t.figures([(case, result)])
    return {"cycles": f["cycles"], "counts": f["counts"]}


def _nnls(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Least squares with x >= 0: drop the most negative term and refit until none is."""
    active = list(range(a.shape[1]))
    x = np.zeros(a.shape[1])
    while active:
        sol, *_ = np.linalg.lstsq(a[:, active], b, rcond=None)
        if (sol >= 0).all():
            x[:] = 0
            x[active] = sol
            return x
        active.pop(int(np.argmin(sol)))
    return x


def fit(t, items) -> Dict[str, Dict[str, float]]:
    by_kind: Dict[str, list] = {}
    for case, result in items:
        by_kind.setdefault(case.kind, []).append(_case_figures(t, case, result))
    kinds = {}
    for kind, figs in by_kind.items():
        tot = lambda key, phase=None: sum((f["cycles"][phase] if phase else f["counts"][key]) for f in figs)  # noqa: E731
        n_out = tot("packets_out")
        count = lambda *keys: np.array([[f["counts"][k] for k in keys] for f in figs], float)  # noqa: E731
        # The FIQ, and the drain with the receive, each split between every packet in and each
        # user event (the traces take 1 and BURST packets an event), the receive also into the
        # packets on its general path (counted by the kernel): relative least squares
        fiq = np.array([f["cycles"]["fiq"] for f in figs], float)
        per_fiq, fiq_event = _nnls(count("packets_in", "user_events") / fiq[:, None], np.ones(len(figs)))
        rx = np.array([f["cycles"]["drain"] + f["cycles"]["receive"] for f in figs], float)
        per_packet, per_start, per_lookup, per_scan, drain_event = _nnls(
            count("packets_in", "starts", "lookups", "scanned", "user_events") / rx[:, None], np.ones(len(figs)))
        entry = {
            "fiq": per_fiq,
            # spin1 scheduling the event, and the FIQ's and the drain's part of one
            "event": tot(None, "event") / tot("user_events") + fiq_event + drain_event,
            "receive": per_packet,
            "start": per_start,
            "lookup": per_lookup,
            "scan": per_scan,
            "packet_out": tot(None, "send") / n_out if n_out else 0.0,
        }
        terms = [k for k in COMPUTE_TERMS if any(f["counts"][COUNT_OF[k]] for f in figs)]
        # relative least squares: every case weighs the same whatever its size
        scale = np.array([1.0 / max(1.0, f["cycles"]["compute"]) for f in figs])
        a = np.array([[f["counts"][COUNT_OF[k]] for k in terms] for f in figs], float) * scale[:, None]
        b = np.array([f["cycles"]["compute"] for f in figs], float) * scale
        x = _nnls(a, b)
        for k in COMPUTE_TERMS:
            entry[k] = float(x[terms.index(k)]) if k in terms else 0.0
        kinds[kind] = {k: round(v, 3) for k, v in entry.items()}
    return kinds


def model_of(entry: Dict[str, float], counts: dict) -> Tuple[float, float]:
    """(all in, compute) cycles the calibration gives a traced case (with its user events)."""
    compute = sum(entry[k] * counts[COUNT_OF[k]] for k in COMPUTE_TERMS)
    total = (compute + counts["packets_in"] * (entry["fiq"] + entry["receive"]) + counts["user_events"] * entry["event"]
             + counts["starts"] * entry["start"] + counts["lookups"] * entry["lookup"]
             + counts["scanned"] * entry["scan"] + counts["packets_out"] * entry["packet_out"])
    return total, compute


def check(t, items, kinds: Dict[str, Dict[str, float]]) -> List[dict]:
    rows = []
    for case, result in items:
        f = _case_figures(t, case, result)
        traced_total, traced_compute = sum(f["cycles"].values()), f["cycles"]["compute"]
        model_total, model_compute = model_of(kinds[case.kind], f["counts"])
        shape = case.shape + (f", {case.burst} a user event" if case.burst > 1 else "")
        rows.append({"kind": case.kind, "shape": shape, "traced": traced_total, "model": model_total,
                     "error": model_total / traced_total - 1.0, "traced_compute": traced_compute,
                     "model_compute": model_compute,
                     "compute_error": (model_compute / traced_compute - 1.0) if traced_compute else 0.0})
    return rows


def table(rows: Sequence[dict]) -> str:
    lines = [f"{'kind':<20} {'tile':<62} {'traced':>10} {'model':>10} {'error':>7} {'compute err':>11}"]
    for r in rows:
        lines.append(f"{r['kind']:<20} {r['shape']:<62} {r['traced']:>10,.0f} {r['model']:>10,.0f} "
                     f"{100 * r['error']:>+6.1f}% {100 * r['compute_error']:>+10.1f}%")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="only check the committed calibration")
    ap.add_argument("--json", type=Path, help="write the check's rows here")
    ap.add_argument("--jobs", type=int, default=None)
    args = ap.parse_args(argv)
    t = _arm_cycles()
    missing = t.missing_tools()
    if missing:
        print(f"calibrate_cycles: {', '.join(missing)} not found; install with:\n    {t.INSTALL_HINT}",
              file=sys.stderr)
        return 2
    quiet = lambda *a, **k: None  # noqa: E731
    if not args.check:
        items = t.trace_cases(both_bursts(fit_cases(t)), jobs=args.jobs, log=quiet)
        kinds = fit(t, items)
        poll = t.figures(items)["poll_window_cycles"]  # the binding's, the same for every kernel
        data = {"source": "tools/calibrate_cycles.py: tools/arm_cycles.py traces of the fit tiles "
                          f"({len(items)}), flags {' '.join(t._flags(t.DEFAULT_OPT))}",
                "compiler": t._tool_version([t.CC, "--version"]),
                "units": "ARM968E-S cycles (200 MHz) per unit of counted work",
                "drain_poll_cycles": round(poll, 1),
                "kinds": kinds}
        CALIBRATION.write_text(json.dumps(data, indent=2) + "\n")
        print(f"wrote {CALIBRATION.relative_to(ROOT)}")
    kinds = json.loads(CALIBRATION.read_text())["kinds"]
    rows = check(t, t.trace_cases(both_bursts(check_cases(t)), jobs=args.jobs, log=quiet), kinds)
    print("the calibrated model against fresh traces of other tiles:")
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    bad = [r for r in rows if abs(r["error"]) > TOLERANCE or abs(r["compute_error"]) > TOLERANCE]
    if bad:
        print(f"calibrate_cycles: {len(bad)} tiles off by more than {TOLERANCE:.0%}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
