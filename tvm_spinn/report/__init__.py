"""Human-readable reports: what a build put on the board, and what a run cost.

.. code-block:: python

    ex = tvm_spinn.build(mod, calibration=x_calib)
    print(tvm_spinn.report.model_report(ex))           # layers, tiles, cores, routing
    vm = relax.VirtualMachine(ex, tvm.cpu()); vm["main"](x)
    print(tvm_spinn.report.format_statistics(tvm_spinn.statistics(vm)))
    tvm_spinn.report.save_plots(vm, "plots")           # placement, per-layer figures, tilings (PNG)

Counts (cores, routing entries, packets, MACs) are exact; cycles, latency and
throughput are *modelled* (see :mod:`tvm_spinn.stats`), and the tables say so.
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

from ..program import BoardProgram
from ..runtime.stats import RunStatistics
from .source import programs  # noqa: F401  (tvm_spinn.report.programs)

# The plots (report.plots) import matplotlib only when first used.
_PLOTS = ("plot_placement", "plot_layers", "plot_tiling", "save_plots")


def __getattr__(name: str):
    if name in _PLOTS:
        from . import plots

        return getattr(plots, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def routing_summary(program: BoardProgram) -> Tuple[int, int, int]:
    """(max entries on one chip, total entries, chips with a table) of a program."""
    sizes = [len(t) for t in program.routing_tables.values()]
    return (max(sizes, default=0), sum(sizes), sum(1 for s in sizes if s))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table: first column left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: List[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))

    return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths)] + [line(r) for r in cells[1:]])


def _short(symbol: str, limit: int = 60) -> str:
    return symbol if len(symbol) <= limit else symbol[:limit - 3] + "..."


def model_summary(obj: Any) -> Dict[str, Any]:
    """Board resources of a build, as plain data (what :func:`model_report` prints)."""
    progs = programs(obj)
    # Functions mapped together share one board (one set of routing tables, one mapping run).
    boards = {tuple(p.board_functions): p for p in progs}.values()
    routing = [routing_summary(p) for p in boards]
    return {
        "functions": len(progs),
        "boards": len(boards),
        "cores": sum(p.n_cores for p in progs),
        "routing_entries_max_per_chip": max((r[0] for r in routing), default=0),
        "routing_entries_total": sum(r[1] for r in routing),
        "mapping_seconds": sum(p.mapping_seconds for p in boards),
    }


def model_report(obj: Any) -> str:
    """Per offloaded function: its layers (tiles rows x columns, cores), total cores
    (kernel cores + the 2 live IO cores), routing entries and mapping time."""
    progs = programs(obj)
    if not progs:
        return "nothing is offloaded to SpiNNaker"
    parts = []
    for p in progs:
        rows = [(lay.name, f"in {lay.fused_into}" if lay.fused_into else f"{lay.row_tiles} x {lay.col_tiles}",
                 lay.cores) for lay in p.layers]
        max_chip, total, chips = routing_summary(p)
        parts.append(
            f"{_short(p.name, 80)}  [{p.board}]\n"
            + table(("layer", "tiles R x C", "cores"), rows) + "\n"
            f"cores: {p.n_cores} ({len(p.cores)} kernel + {p.n_cores - len(p.cores)} live IO); "
            f"routing entries{' of the board shared by %d functions' % len(p.board_functions) if len(p.board_functions) > 1 else ''}: "
            f"{total} on {chips} chip(s), max {max_chip} per chip (limit 1023); "
            f"mapping {p.mapping_seconds:.2f} s")
    s = model_summary(obj)
    if len(progs) > 1:
        parts.append(f"total: {s['functions']} offloaded functions, {s['cores']} cores, "
                     f"{s['routing_entries_total']} routing entries on {s['boards']} board(s) (max "
                     f"{s['routing_entries_max_per_chip']} per chip), mapping {s['mapping_seconds']:.2f} s")
    return "\n\n".join(parts)


def statistics_rows(stats: RunStatistics) -> List[Tuple[str, str, str]]:
    """(quantity, value, kind) rows of one call's statistics; kind: counted, modelled or measured."""
    us = 1e6
    rows = [
        ("samples", f"{stats.samples}", "counted"),
        ("cores", f"{stats.cores}", "counted"),
        ("packets per inference", f"{stats.packets_per_inference:.1f}", "counted"),
        ("router traversals", f"{stats.router_traversals}", "counted"),
        ("link traversals", f"{stats.link_traversals}", "counted"),
        ("MACs per inference", f"{stats.macs / max(1, stats.samples):.0f}", "counted"),
        ("input values saturated", f"{stats.saturated_inputs}", "counted"),
    ]
    rows += [(f"  {op} values saturated", f"{n}", "counted") for op, n in stats.saturated_values.items()]
    rows += [
        ("max core cycles per sample",
         f"{stats.max_core_cycles_per_sample:.0f} ({stats.describe_core(stats.bottleneck_core)})",
         "modelled"),
    ]
    rows += [(f"  {layer} cycles per sample", f"{c:.0f}", "modelled")
             for layer, c in stats.layer_cycles_per_sample.items()]
    how = "timed emulation" if stats.timed else "formula"
    rows += [
        (f"board latency ({how})", f"{stats.modelled_latency_s * us:.1f} us", "modelled"),
        (f"board throughput ({how})", f"{stats.modelled_throughput_per_s:.0f} samples/s", "modelled"),
        ("bottleneck", stats.describe_resource(stats.bottleneck)
         + (f" ({stats.timed.bottleneck_utilisation:.0%} busy)" if stats.timed else ""),
         "modelled"),
        ("busiest resources", ", ".join(f"{stats.describe_resource(k)} {v:.0%}" for k, v in stats.timed.top(3))
         if stats.timed else "-",
         "modelled"),
        ("busiest link", next((f"{k} {v:.0%}" for k, v in stats.timed.top(len(stats.timed.utilisation))
                               if k.startswith("link")), "none used") if stats.timed else "-", "modelled"),
        ("packets a board would drop", f"{stats.predicted_drops}" if stats.timed else "- (timing off)", "modelled"),
        ("samples lost in this call", f"{stats.lost_samples}", "counted"),
        ("samples cores would time out", f"{stats.timed.would_time_out}" if stats.timed else "- (timing off)",
         "modelled"),
        ("energy per inference", f"{stats.modelled_energy_j * 1e3:.3g} mJ", "modelled"),
        ("host link limit", f"{stats.host_link_limit_per_s:.0f} samples/s", "modelled"),
        ("emulator wall time", f"{stats.wall_seconds:.4f} s", "measured"),
        ("emulator speed", f"{stats.emulator_samples_per_s:.0f} samples/s", "measured"),
    ]
    return rows


def format_statistics(stats: RunStatistics) -> str:
    """A table of one call's RunStatistics, each row labelled counted / modelled / measured."""
    return table(("quantity", "value", "kind"), statistics_rows(stats))


def offload_report(ex: Any) -> str:
    """Every op of a build's model, on the board or on the host, and for the host ones why
    (from :func:`tvm_spinn.build`'s record on the executable)."""
    summary = getattr(ex, "spinnaker_offload", None)
    if summary is None:
        return "no offload record: build with tvm_spinn.build"
    parts = [summary.line(), table(("op", "where", "why on the host"), summary.rows())]
    parts += [f"kept on the host: {summary.title(fn)}: {why}" for fn, why in summary.refused.items()]
    return "\n".join(parts)
