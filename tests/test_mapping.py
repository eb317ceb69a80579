"""Mapping a machine graph with the real SpiNNaker toolchain on a virtual board."""
from __future__ import annotations

import hashlib
import struct
from collections import defaultdict
from typing import Dict, List, Set, Tuple

import numpy as np
import pytest

from tvm_spinn.errors import MappingError
from tvm_spinn.machine.graph import (LOST_TIMEOUT_TICKS, 
    FIX_KEY,
    FIX_MASK,
    INPUT,
    KERNEL,
    OUTPUT,
    MachineGraphSpec,
    MappingResult,
    VertexSpec,
    unframe_config,
)
from tvm_spinn.machine.mapping import map_graph, trace_route
from tvm_spinn.machine.mapping.routes import check_router_tables

BINARY = "dense_tile.aplx"
N_HEADER = 3  # config words before the (key, mask) pairs


def layered_spec(sizes=(4, 12, 4), board_version: int = 5) -> MachineGraphSpec:
    """input -> fan out -> layers fully connected to the previous one -> output.

    Each kernel's config: 3 marker words, then (key, mask) placeholders for every source.
    """
    vertices = [VertexSpec("in", INPUT, n_keys=16)]
    edges: List[Tuple[str, str]] = []
    prev = ["in"]
    for li, n in enumerate(sizes):
        layer = []
        for i in range(n):
            label = f"l{li}_{i}"
            # Fix-ups OR into their placeholder: key placeholders carry field bits below the
            # 8-key block (1..7), mask placeholders 0.
            config = np.zeros(N_HEADER + 2 * len(prev), np.uint32)
            config[N_HEADER::2] = (np.arange(len(prev)) % 7) + 1
            config[:N_HEADER] = (li, i, len(prev))
            fixups = []
            for j, src in enumerate(prev):
                edges.append((src, label))
                fixups += [(N_HEADER + 2 * j, src, FIX_KEY, 0), (N_HEADER + 2 * j + 1, src, FIX_MASK, 0)]
            vertices.append(
                VertexSpec(label, KERNEL, n_keys=8, binary=BINARY, config=config, key_fixups=fixups, sdram_bytes=4096)
            )
            layer.append(label)
        prev = layer
    vertices.append(VertexSpec("out", OUTPUT))
    edges += [(src, "out") for src in prev]
    return MachineGraphSpec(vertices, edges, board_version)


@pytest.fixture(scope="module")
def mapped() -> Tuple[MachineGraphSpec, MappingResult]:
    spec = layered_spec()
    return spec, map_graph(spec)


def test_every_vertex_on_its_own_core(mapped):
    spec, result = mapped
    assert set(result.placements) == {v.label for v in spec.vertices}
    cores = list(result.placements.values())
    assert len(set(cores)) == len(cores)
    chips = set(result.chips)
    assert len(chips) == 48 and result.max_router_entries == 1023
    for x, y, p in cores:
        assert (x, y) in chips and 1 <= p <= 17  # core 0 is the monitor


def test_keys_are_disjoint_blocks(mapped):
    spec, result = mapped
    senders = {pre for pre, _ in spec.edges}
    assert set(result.keys) == senders
    n_keys = {v.label: v.n_keys for v in spec.vertices}
    blocks = []
    for label, (key, mask) in result.keys.items():
        assert key & mask == key
        size = (~mask & 0xFFFFFFFF) + 1
        assert size >= n_keys[label]
        blocks.append((key, key + size))
    blocks.sort()
    assert all(a[1] <= b[0] for a, b in zip(blocks, blocks[1:]))


def test_regions_hold_header_and_fixed_up_config(mapped):
    spec, result = mapped
    app_hash = int(hashlib.md5(b"dense_tile").hexdigest()[:8], 16)
    for v in spec.vertices:
        if v.kind != KERNEL:
            assert v.label not in result.regions
            continue
        regions = result.regions[v.label]
        # Simulation header: app name hash, timestep (us), SDP port for run control.
        assert struct.unpack("<3I", regions[0]) == (app_hash, 1000, 3)
        framed = np.frombuffer(regions[1], dtype="<u4")
        # the region carries its own length and checksum (7.4.1 zeroes the table's), the lost
        # timeout and the lost-marker key bit; the provenance region is reserved, not written
        assert framed[0] == len(v.config) and framed[1] == int(framed[4:].astype(np.uint64).sum()) & 0xFFFFFFFF
        assert framed[2] == LOST_TIMEOUT_TICKS and framed[3] == v.lost_bit
        assert 2 not in regions or regions[2] == b""
        words = unframe_config(framed, v.label)
        assert len(words) == len(v.config)
        fixed = {word for word, _, _, _ in v.key_fixups}
        for word, src, what, part in v.key_fixups:
            key, mask = result.partition_keys[src][part]
            assert words[word] == (key if what == FIX_KEY else mask) | v.config[word]
        for word in set(range(len(v.config))) - fixed:
            assert words[word] == v.config[word]


def assert_routes_exact(spec: MachineGraphSpec, result: MappingResult) -> None:
    """Every key of every partition of every sender reaches exactly the cores of that
    partition's targets."""
    for part in spec.sender_partitions():
        src = part.pre
        key, mask = result.partition_keys[src][part.index]
        targets = {result.placements[post] for post in part.posts}
        x, y, _ = result.placements[src]
        # The first and the last key of the block.
        for k in (key, key | (~mask & 0xFFFFFFFF)):
            delivered, links = trace_route(result, (x, y), k)
            assert delivered == targets, (src, part.index)
            assert all((lx, ly, link) in result.links for lx, ly, link in links)


def test_routes_deliver_exactly_to_targets(mapped):
    assert_routes_exact(*mapped)


def test_routes_across_many_chips():
    """~300 vertices over many chips: multi-hop routes, straight-through entries."""
    rng = np.random.default_rng(1)
    vertices = [VertexSpec("in", INPUT, n_keys=256)]
    edges: List[Tuple[str, str]] = []
    prev = ["in"]
    for li, n in enumerate((100, 100, 98)):
        layer = [f"l{li}_{i}" for i in range(n)]
        for label in layer:
            srcs = rng.choice(prev, size=min(10, len(prev)), replace=False)
            edges += [(str(s), label) for s in srcs]
            vertices.append(VertexSpec(label, KERNEL, n_keys=32, binary=BINARY, config=np.zeros(1, np.uint32)))
        prev = layer
    vertices.append(VertexSpec("out", OUTPUT))
    edges += [(s, "out") for s in prev]
    spec = MachineGraphSpec(vertices, edges)
    result = map_graph(spec)
    assert len({(x, y) for x, y, _ in result.placements.values()}) >= 17
    assert_routes_exact(spec, result)


def test_route_words_use_only_existing_links_and_cores(mapped):
    _, result = mapped
    for (x, y), table in result.routing_tables.items():
        assert table.dtype == np.uint32 and table.shape[1] == 3
        for _, _, route in table:
            for link in range(6):
                if route >> link & 1:
                    assert (x, y, link) in result.links
            assert route >> (6 + 18) == 0  # no core beyond 17
    assert check_router_tables(result) == []


def test_too_many_kernels_for_the_board_and_a_second_mapping():
    # SpiNN-3: 4 chips x 17 application cores = 68.
    vertices = [VertexSpec(f"k{i}", KERNEL, n_keys=1, binary=BINARY, config=np.zeros(1, np.uint32)) for i in range(80)]
    edges = [(f"k{i}", f"k{i + 1}") for i in range(79)]
    with pytest.raises(MappingError, match=r"not enough cores.*80 cores.*68 application cores"):
        map_graph(MachineGraphSpec(vertices, edges, board_version=3))
    # The process is still fine for another mapping (the toolchain runs in a subprocess).
    spec = layered_spec((2, 3, 2), board_version=3)
    result = map_graph(spec)
    assert len(result.chips) == 4
    assert len(set(result.placements.values())) == len(spec.vertices)


def test_bad_specs_are_rejected_before_the_toolchain():
    spec = layered_spec((1, 1, 1))
    spec.edges.append(("l0_0", "nowhere"))
    with pytest.raises(MappingError, match="unknown vertex 'nowhere'"):
        map_graph(spec)
    with pytest.raises(MappingError, match="board_version"):
        map_graph(MachineGraphSpec([], [], board_version=4))


def _toy_result(tables) -> MappingResult:
    """A 3x1 row of chips (0,0)-(1,0)-(2,0) joined by E/W links."""
    links = {(0, 0, 0): (1, 0), (1, 0, 3): (0, 0), (1, 0, 0): (2, 0), (2, 0, 3): (1, 0)}
    return MappingResult(
        placements={},
        keys={},
        routing_tables={xy: np.array(t, np.uint32).reshape(-1, 3) for xy, t in tables.items()},
        regions={},
        chips=[(0, 0), (1, 0), (2, 0)],
        links=links,
        n_cores_per_chip_available=17,
        max_router_entries=2,
    )


def test_trace_route_default_routing_first_match_and_limits():
    core = lambda p: 1 << (6 + p)  # noqa: E731
    result = _toy_result(
        {
            (0, 0): [(0x100, 0xFFFFFF00, 1 | core(3))],  # east and core 3
            # (1, 0) has no entry: a packet arriving from the west goes straight on east
            (2, 0): [(0x100, 0xFFFFFFF0, core(1)), (0x100, 0xFFFFFF00, core(2)), (0, 0, core(4))],
        }
    )
    delivered, links = trace_route(result, (0, 0), 0x105)
    assert delivered == {(0, 0, 3), (2, 0, 1)}  # first matching entry wins on (2, 0)
    assert links == [(0, 0, 0), (1, 0, 0)]
    delivered, _ = trace_route(result, (0, 0), 0x1F5)
    assert delivered == {(0, 0, 3), (2, 0, 2)}
    # Injected on a chip without a matching entry: dropped.
    assert trace_route(result, (1, 0), 0x105) == (set(), [])
    # Leaving the machine is a mapping bug.
    bad = _toy_result({(2, 0): [(0x100, 0xFFFFFF00, 1)]})
    with pytest.raises(MappingError, match="does not exist"):
        trace_route(bad, (2, 0), 0x100)
    assert check_router_tables(result) == ["chip (2, 0) needs 3 entries, the router has 2"]


def test_router_overflow_message_names_the_chip():
    from tvm_spinn.machine.mapping import _error_from_worker

    stderr = (
        'noise\nTVM_SPINN_ERROR router {"message": "m", "chips": [[3, 4, 1100]]}\nTraceback ...\n'
        "pacman.exceptions.MinimisationFailedError: ...\n"
    )
    err = _error_from_worker(layered_spec(), stderr, 1)
    assert "chip (3, 4) needs 1100 entries" in str(err) and "1023" in str(err)
