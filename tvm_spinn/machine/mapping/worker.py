"""Mapping worker: ``python -m tvm_spinn.machine.mapping.worker <scratch dir>``.

Reads ``spec.pkl`` (a MachineGraphSpec) from the scratch directory, maps it with the real
SpiNNaker toolchain on a virtual board, and writes ``result.pkl`` (a MappingResult).
Runs in its own process because the toolchain keeps global state (one simulation per
process) and writes report trees into its working directory.

On an error it prints one line ``TVM_SPINN_ERROR <kind> <json>`` to stderr, which
:func:`tvm_spinn.machine.mapping.map_graph` turns into a clear MappingError.
"""
from __future__ import annotations

import json
import os
import re
import sys
import time
from typing import Dict, List, Tuple

import numpy as np

from ..graph import (KERNEL, RESULT_FILE, SPEC_FILE, CoreImage, IPTagSpec, MachineGraphSpec,
                     MappingResult, dump_result, load_spec, partition_name)

ERROR_TAG = "TVM_SPINN_ERROR"
# A short run: on a virtual board gfe.run maps, allocates keys, generates routing tables
# and data specs, then skips loading and running. The length only sizes buffers.
RUN_MS = 1


def _tag(kind: str, **info) -> None:
    """One machine-readable error line for the parent process."""
    print(f"{ERROR_TAG} {kind} {json.dumps(info)}", file=sys.stderr, flush=True)


def _table_array(table) -> np.ndarray:
    """(n, 3) uint32 rows (key, mask, route word) in table order (order matters after
    ordered compression: the router takes the first matching entry)."""
    rows = [(e.key, e.mask, e.spinnaker_route) for e in table.multicast_routing_entries]
    return np.array(rows, dtype=np.uint32).reshape(-1, 3)


def _routing_tables(n_entries: int) -> Tuple[Dict[Tuple[int, int], np.ndarray], str]:
    """Routing tables the routers would hold, and which stage they come from.

    The toolchain's uncompressed tables keep one entry per (source, chip), including the
    "defaultable" straight-through ones. If any table exceeds the router, run PACMAN's
    (ordered) pair compressor, which is what a virtual-board run would load; the
    compressed tables are not kept in the data view, so recompute them here.
    """
    from spinn_front_end_common.data import FecDataView

    tables = FecDataView.get_uncompressed()
    stage = "uncompressed"
    if tables.get_max_number_of_entries() > n_entries:
        from pacman.operations.router_compressors import pair_compressor

        # Raises MinimisationFailedError (caught by main) if still too big.
        tables = pair_compressor()
        stage = "pair-compressed"
    out = {(t.x, t.y): _table_array(t) for t in tables.routing_tables}
    return {k: v for k, v in out.items() if len(v)}, stage


def _machine() -> Tuple[List[Tuple[int, int]], Dict[Tuple[int, int, int], Tuple[int, int]], int, int]:
    from spinn_front_end_common.data import FecDataView

    machine = FecDataView.get_machine()
    chips, links = [], {}
    n_cores, n_entries = 1 << 30, 1 << 30
    for chip in machine.chips:
        chips.append((chip.x, chip.y))
        n_cores = min(n_cores, chip.n_placable_processors)
        n_entries = min(n_entries, chip.router.n_available_multicast_entries)
        for link in chip.router.links:
            links[(chip.x, chip.y, link.source_link_id)] = (link.destination_x, link.destination_y)
    return sorted(chips), links, n_cores, n_entries


def _images(vertices: Dict[str, object], placements: Dict[str, Tuple[int, int, int]]) -> List[CoreImage]:
    """Every core's binary and data-spec regions (sizes and written bytes), from the
    data-spec database: what front-end-common's loader would write on a board.

    One query over the database's ``region`` table instead of 7.4.1's per-core
    ``get_region_pointers_and_content`` (which reads a slow UNION view: 1.3 s for 800 cores).
    A reserved region nothing was written to has NULL content: no data.
    """
    from spinn_front_end_common.interface.ds import DsSqlliteDatabase

    by_core = {placements[label]: label for label in vertices}
    images = {label: CoreImage(label, tuple(placements[label]), vertices[label].get_binary_file_name())
              for label in vertices}
    with DsSqlliteDatabase() as db:
        rows = db.cursor().execute("SELECT x, y, p, region_num, size, content FROM region")
        for x, y, p, num, size, content in rows:
            label = by_core.get((x, y, p))
            if label is not None:
                images[label].region_sizes[int(num)] = int(size)
                if content is not None:
                    images[label].region_data[int(num)] = bytes(content)
    return [images[label] for label in vertices]


def _iptags(vertices: Dict[str, object]) -> List[IPTagSpec]:
    from spinn_front_end_common.data import FecDataView

    tags = FecDataView.get_tags()
    out = []
    for label, vertex in vertices.items():
        for tag in tags.get_ip_tags_for_vertex(vertex) or ():
            out.append(IPTagSpec(label, int(tag.destination_x), int(tag.destination_y), int(tag.tag),
                                 bool(tag.strip_sdp)))
    return out


def _lazy_scipy_stats() -> None:
    """Defer ``import scipy.stats`` until something uses it.

    front-end-common imports it at start-up only to summarise on-board profiling data
    (never on a virtual board), and it is about half the toolchain's import time. A
    placeholder module in ``sys.modules`` satisfies the import; the first attribute
    looked up on it imports the real module. (importlib's LazyLoader does not help here:
    the import system touches the module's attributes and so loads it at once.)
    """
    import importlib
    import types

    if "scipy.stats" in sys.modules:
        return

    class _Deferred(types.ModuleType):
        def __getattr__(self, name: str):
            if sys.modules.get("scipy.stats") is self:
                del sys.modules["scipy.stats"]
            return getattr(importlib.import_module("scipy.stats"), name)

    sys.modules["scipy.stats"] = _Deferred("scipy.stats")


def _quiet_progress_bars() -> None:
    """Silence the toolchain's progress bars (they write to stderr and would bury errors)."""
    from spinn_utilities.progress_bar import DummyProgressBar, ProgressBar

    for name in ("_print_overwritten_line", "_print_distance_indicator", "_print_progress", "_print_progress_done"):
        setattr(ProgressBar, name, getattr(DummyProgressBar, name))


def _pin_to_boards(spec: MachineGraphSpec, vertices: Dict[str, object], gfe) -> None:
    """Each copy's vertices on chips of its own board (spec.board_of, mapping.boards)."""
    if not spec.board_of:
        return
    import logging

    from .boards import fixed_chips

    quiet = logging.getLogger("spinnaker_graph_front_end")
    level, quiet.level = quiet.level, logging.ERROR  # gfe.machine() warns to use a core count
    try:
        machine = gfe.machine()
    finally:
        quiet.level = level
    chips, why = fixed_chips(spec, {(c.x, c.y): c.n_placable_processors for c in machine.chips})
    if why:
        print(f"tvm_spinn mapping: the toolchain places the copies freely: {why}", file=sys.stderr, flush=True)
    for label, (x, y) in chips.items():
        vertices[label].set_fixed_location(x, y)


def map_spec(spec: MachineGraphSpec) -> MappingResult:
    """Map ``spec`` in this process (call once per process)."""
    t0 = time.perf_counter()
    _lazy_scipy_stats()
    import spinnaker_graph_front_end as gfe
    from spinn_front_end_common.data import FecDataView

    _quiet_progress_bars()

    from .vertices import build_graph

    t_import = time.perf_counter()
    gfe.setup()
    partitions = spec.sender_partitions()
    vertices = build_graph(spec.vertices, partitions, gfe)
    _pin_to_boards(spec, vertices, gfe)
    gfe.run(RUN_MS)
    t_run = time.perf_counter()

    by_vertex = {v: label for label, v in vertices.items()}
    spec_kinds = {v.label: v.kind for v in spec.vertices}
    placements = {}
    for pl in FecDataView.iterate_placemements():
        if pl.vertex in by_vertex:  # skip system vertices (none with monitors off)
            placements[by_vertex[pl.vertex]] = (pl.x, pl.y, pl.p)
    infos = gfe.routing_infos()
    partition_keys: Dict[str, List[Tuple[int, int]]] = {}
    for part in sorted(partitions, key=lambda p: p.index):
        info = infos.get_info_from(vertices[part.pre], partition_name(part.index))
        partition_keys.setdefault(part.pre, []).append((int(info.key), int(info.mask)))
    keys = {label: parts[0] for label, parts in partition_keys.items()}
    chips, links, n_cores, n_entries = _machine()
    tables, stage = _routing_tables(n_entries)
    images = _images(vertices, placements)
    regions = {im.label: dict(im.region_data) for im in images if spec_kinds[im.label] == KERNEL}
    iptags = _iptags(vertices)
    app_id = int(FecDataView.get_app_id())
    gfe.stop()
    t_end = time.perf_counter()
    print(
        f"tvm_spinn mapping: {len(spec.vertices)} vertices, {len(spec.edges)} edges, "
        f"{len(partitions)} partitions; "
        f"import {t_import - t0:.2f}s, map+dsg {t_run - t_import:.2f}s, "
        f"harvest+stop {t_end - t_run:.2f}s; tables {stage}",
        file=sys.stderr,
        flush=True,
    )
    return MappingResult(
        placements=placements,
        keys=keys,
        routing_tables=tables,
        regions=regions,
        chips=chips,
        links=links,
        n_cores_per_chip_available=n_cores,
        max_router_entries=n_entries,
        mapping_seconds=t_end - t0,
        images=images,
        iptags=iptags,
        app_id=app_id,
        partition_keys=partition_keys,
    )


def main(argv: List[str]) -> None:
    scratch = argv[1]
    with open(os.path.join(scratch, SPEC_FILE), "rb") as f:
        spec = load_spec(f.read())
    try:
        result = map_spec(spec)
    except Exception as exc:  # translate the toolchain's errors into a tagged line
        _classify(exc, spec)
        raise
    with open(os.path.join(scratch, RESULT_FILE), "wb") as f:
        f.write(dump_result(result))


def _classify(exc: Exception, spec: MachineGraphSpec) -> None:
    """Print a tagged line for errors we recognise (the traceback follows)."""
    from pacman.exceptions import MinimisationFailedError, PacmanPlaceException

    msg = re.sub(r"\s*Report written to \S+", "", str(exc))[-2000:]
    if isinstance(exc, PacmanPlaceException):
        info = {"n_vertices": len(spec.vertices), "n_kernels": sum(v.kind == KERNEL for v in spec.vertices)}
        try:
            from spinn_front_end_common.data import FecDataView

            machine = FecDataView.get_machine()
            info["n_chips"] = machine.n_chips
            info["n_cores"] = sum(c.n_placable_processors for c in machine.chips)
        except Exception:  # machine not built yet: the parent falls back to nominal figures
            pass
        _tag("cores", message=msg, **info)
    elif isinstance(exc, MinimisationFailedError):
        # e.g. "... will still not fit within the machines router: (x:0,y:1)=1100 "
        chips = [(int(x), int(y), int(n)) for x, y, n in re.findall(r"\(x:(\d+),y:(\d+)\)=(\d+)", msg)]
        _tag("router", message=msg, chips=chips)


if __name__ == "__main__":
    main(sys.argv)
