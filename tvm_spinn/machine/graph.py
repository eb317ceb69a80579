"""Toolchain-independent description of a SpiNNaker machine graph and of its mapping.

The builder (:mod:`.builder`) makes a :class:`MachineGraphSpec` (plain data); the mapping
(:mod:`.mapping`) turns it into real SpiNNaker toolchain vertices and edges, maps them on a
virtual board in a worker process, and returns a :class:`MappingResult`. Both cross the
process boundary in :mod:`tvm_spinn.serialization`'s format (no pickle).

A vertex sends on one or more outgoing partitions (:class:`PartitionSpec`, named by
:func:`partition_name`), each with its own key block from the toolchain: a kernel whose rows
go to different cores sends each set of rows on its own partition, so that a packet reaches
only the cores that read it. ``edges`` lists every ``(pre, post)`` pair once.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import numpy as np

from .. import serialization

PARTITION = "out"


def partition_name(index: int) -> str:
    """The toolchain's identifier of a vertex's outgoing partition ``index``."""
    return PARTITION if index == 0 else f"{PARTITION}{index}"


# Vertex kinds
KERNEL = "kernel"  # runs one of our C kernels (c_runtime/kernels)
INPUT = "input"  # live input: ReverseIPTagMulticastSource
OUTPUT = "output"  # live output: LivePacketGatherer

# The kernels' binaries (c_runtime/Makefile builds them) by the emulator's core kind
# (spinn_emulator.h SPINN_CORE_*; machine.configs CORE_*): the one list the builder, the
# board loader and the board double read.
KERNEL_BINARIES = {1: "dense_tile.aplx", 2: "dense_reduce.aplx", 4: "conv_tile.aplx", 5: "pool_tile.aplx",
                   6: "add_tile.aplx", 7: "conv_reduce.aplx"}

# Key fix-ups: the config region holds placeholders the mapper fills with the
# routing key or mask allocated to a source vertex's outgoing partition.
FIX_KEY = "key"
FIX_MASK = "mask"


@dataclass
class VertexSpec:
    """One core's worth of work.

    label: unique name. kind: KERNEL, INPUT or OUTPUT.
    n_keys: number of keys of its outgoing partition (a power of two; 0 = sends nothing).
    binary: the .aplx the core would run (KERNEL only).
    config: uint32 words of the kernel's config region (region 1), with placeholders.
    key_fixups: (word index, source vertex label, FIX_KEY or FIX_MASK, partition index):
        before the region is written, ``config[word] |= key or mask of that partition of
        the source`` (the placeholder holds extra bits to OR in, usually 0).
    sdram_bytes: SDRAM the core needs (regions and buffers).
    lost_bit: the key bit the core ORs into a lost-value marker (c_runtime/include/spinn_fixed.h):
        its key block holds twice its slots, and the upper half carries the markers.
    send_gap, send_phase: cycles the core leaves at least between two packets it sends, and
        waits at its first send after being idle (machine.send_gaps).
    """

    label: str
    kind: str
    n_keys: int = 0
    binary: str = ""
    config: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint32))
    key_fixups: List[Tuple[int, str, str, int]] = field(default_factory=list)
    sdram_bytes: int = 0
    lost_bit: int = 0
    send_gap: int = 0
    send_phase: int = 0


@dataclass
class PartitionSpec:
    """Outgoing partition ``index`` of vertex ``pre`` (0, 1, ... per vertex) and the vertices
    it goes to. Every partition of a vertex gets a key block of the vertex's n_keys.
    packets: the packets it carries a sample (0: not known)."""

    pre: str
    index: int
    posts: List[str]
    packets: int = 0


@dataclass
class MachineGraphSpec:
    vertices: List[VertexSpec]
    edges: List[Tuple[str, str]]  # (pre label, post label)
    board_version: int = 5  # 3 = SpiNN-3 (4 chips), 5 = SpiNN-5 (48 chips)
    boards: int = 1  # boards of the machine (3: a triad of SpiNN-5 boards, 144 chips)
    # every sender's partitions; empty: one partition per sender, to every post of its edges
    partitions: List[PartitionSpec] = field(default_factory=list)
    # label -> the board (index into the machine's Ethernet chips) the vertex must sit on
    # (copies of a model, one board each: mapping.boards); empty: the toolchain places freely
    board_of: Dict[str, int] = field(default_factory=dict)

    def sender_partitions(self) -> List[PartitionSpec]:
        """The partitions, with the default (one per sender) filled in."""
        if self.partitions:
            return self.partitions
        posts: Dict[str, List[str]] = {}
        for pre, post in self.edges:
            posts.setdefault(pre, []).append(post)
        return [PartitionSpec(pre, 0, list(dict.fromkeys(p))) for pre, p in posts.items()]


@dataclass
class CoreImage:
    """What one core of the machine graph loads on a board: its binary and its data-spec
    regions, as front-end-common's data-spec loader would write them.

    label: the vertex. placement: (x, y, p). binary: the .aplx file name (our kernels:
    built by c_runtime/Makefile; live IO: front-end-common's common_model_binaries).
    region_sizes: region id -> bytes reserved. region_data: region id -> bytes written (a
    reserved region may have none). A kernel's config region (1) is left out of the stored
    program: it is ``frame_config`` of the core's config words, rebuilt at load time.
    """

    label: str
    placement: Tuple[int, int, int]
    binary: str
    region_sizes: Dict[int, int] = field(default_factory=dict)
    region_data: Dict[int, bytes] = field(default_factory=dict)


@dataclass
class IPTagSpec:
    """An IP tag the toolchain allocated (the live packet gatherer's): the board's Ethernet
    chip (eth_x, eth_y), the tag number, and whether SCAMP strips the SDP header. The host
    address and port are set at load time, to wherever the runtime listens."""

    label: str
    eth_x: int
    eth_y: int
    tag: int
    strip_sdp: bool = True


@dataclass
class MappingResult:
    """What the toolchain decided, in plain data.

    placements: label -> (x, y, p).
    keys: label -> (key, mask) of the vertex's outgoing partition 0.
    partition_keys: label -> (key, mask) of each of its partitions, by index.
    routing_tables: (x, y) -> uint32 array (n, 3) of (key, mask, route word), where the
        route word has bit i (0..5) for link i (E, NE, N, W, SW, S) and bit 6 + p for core p.
    regions: label -> {region id: bytes}, the exact bytes the core would load (KERNEL only).
    chips: list of (x, y) of the machine's chips; links: (x, y, link) -> (x2, y2) neighbours.
    n_cores_per_chip_available: application cores per chip.
    max_router_entries: entries available per chip for applications.
    mapping_seconds: wall time of the toolchain run.
    """

    placements: Dict[str, Tuple[int, int, int]]
    keys: Dict[str, Tuple[int, int]]
    routing_tables: Dict[Tuple[int, int], np.ndarray]
    regions: Dict[str, Dict[int, bytes]]
    chips: List[Tuple[int, int]]
    links: Dict[Tuple[int, int, int], Tuple[int, int]]
    n_cores_per_chip_available: int
    max_router_entries: int
    mapping_seconds: float = 0.0
    images: List[CoreImage] = field(default_factory=list)  # every core: kernels and live IO
    iptags: List[IPTagSpec] = field(default_factory=list)
    app_id: int = 0
    partition_keys: Dict[str, List[Tuple[int, int]]] = field(default_factory=dict)


# A kernel's config region (region 1) carries its own length and checksum in front of the
# config words: front-end-common 7.4.1's data_specification_get_data_address() verifies each
# region and then zeroes the region table's n_words and checksum, so the core cannot read
# them from the table (c_runtime/spin1/spin1_binding.h reads this header instead). The third
# header word is the lost-sample timeout, the fourth the key bit of the core's lost-value
# markers (c_runtime/include/spinn_slots.h, spinn_fixed.h).
CONFIG_HEADER_WORDS = 5  # n_words, wrapping 32-bit sum of the config words, lost timeout, lost bit, send pace
HEADER_LOST_BIT, HEADER_SEND_PACE = 3, 4  # their words in the header (send pace: gap | phase << 16)
# Quiet timer ticks (1 ms, front-end-common's default time step) after which a core releases
# a partly received sample as lost. It must exceed the longest quiet gap a core sees within a
# sample: the planner sizes each core's work to the host link's time per sample (at least
# 250 us, tiling.resources), but a core's real load (every packet of its producers, fan-out
# included) can be far more: the timed emulation puts ResNet-8's busiest core at about 13 ms
# per sample, so 20 ms is a thin margin there (runtime/timing.py reports the busiest cores).
LOST_TIMEOUT_TICKS = 20

# Region ids of a kernel core (spin1_binding.h).
SYSTEM_REGION, CONFIG_REGION, PROVENANCE_REGION = 0, 1, 2
# The kernel cores' provenance words after front-end-common's system words, in the order
# spin1_binding.h stores them: spinn_counters_t, then spinn_slots_t and the binding's.
PROVENANCE_NAMES = (
    "packets_in", "packets_out", "computes", "outputs", "blocks", "macs_lo", "macs_hi",
    "dropped", "saturated", "rx_general", "rx_lookups", "rx_scanned", "markers_in", "released", "lost_out", "rx_overflow",
    "send_failed", "compute_failed", "trigger_failed",
)
# front-end-common's struct simulation_provenance (simulation.h, 7.4.1)
SYSTEM_PROVENANCE_NAMES = (
    "transmission_event_overflow", "callback_queue_overloads", "dma_queue_overloads",
    "user_queue_overloads", "timer_tic_has_overrun", "max_num_timer_tic_overrun",
)


def frame_config(words: np.ndarray, lost_timeout: int = LOST_TIMEOUT_TICKS, lost_bit: int = 0,
                 send_gap: int = 0, send_phase: int = 0) -> np.ndarray:
    """The region-1 words of a kernel config: its length, checksum, lost-sample timeout
    (timer ticks), lost-marker key bit (VertexSpec.lost_bit) and send pace (cycles,
    VertexSpec.send_gap | send_phase << 16), then the config. Raises ValueError for a gap
    or phase of 2**16 cycles or more."""
    if not (0 <= send_gap <= 0xFFFF and 0 <= send_phase <= 0xFFFF):
        raise ValueError(f"send gap {send_gap} / phase {send_phase}: at most 65535 cycles each")
    words = np.asarray(words, np.uint32)
    checksum = int(words.astype(np.uint64).sum()) & 0xFFFFFFFF
    pace = send_gap | send_phase << 16
    return np.concatenate([np.array([len(words), checksum, lost_timeout, lost_bit, pace], np.uint32), words])


def send_pace(header: np.ndarray) -> Tuple[int, int]:
    """(send gap, send phase) in cycles from a config region's header (:func:`frame_config`)."""
    word = int(header[HEADER_SEND_PACE])
    return word & 0xFFFF, word >> 16


def unframe_config(region: np.ndarray, label: str = "kernel") -> np.ndarray:
    """The config words of a region written by :func:`frame_config` (ValueError if its header
    does not match)."""
    region = np.asarray(region, np.uint32)
    if len(region) < CONFIG_HEADER_WORDS or int(region[0]) + CONFIG_HEADER_WORDS > len(region):
        raise ValueError(f"{label}: config region of {len(region)} words has no valid length header")
    words = region[CONFIG_HEADER_WORDS:CONFIG_HEADER_WORDS + int(region[0])]
    if int(words.astype(np.uint64).sum()) & 0xFFFFFFFF != int(region[1]):
        raise ValueError(f"{label}: config region checksum mismatch")
    return words


SPEC_FILE, RESULT_FILE = "spec.bin", "result.bin"  # in the mapping worker's scratch directory
_SPEC_MAGIC, _RESULT_MAGIC, _VERSION = b"SPINNMGS", b"SPINNMAP", 1


def dump_spec(spec: MachineGraphSpec) -> bytes:
    return serialization.dumps(spec, _SPEC_MAGIC, _VERSION)


def load_spec(blob: bytes) -> MachineGraphSpec:
    return serialization.loads(blob, MachineGraphSpec, _SPEC_MAGIC)


def dump_result(result: MappingResult) -> bytes:
    return serialization.dumps(result, _RESULT_MAGIC, _VERSION)


def load_result(blob: bytes) -> MappingResult:
    return serialization.loads(blob, MappingResult, _RESULT_MAGIC)
