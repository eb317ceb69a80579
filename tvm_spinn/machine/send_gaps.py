"""Send gaps: the least time a kernel core leaves between two packets it sends, so that
the cores reading it are not sent packets faster than they take them in.

Nothing on a board holds a sender back: a core whose packets come faster than its FIQ
and drain take them in (tiling.cycle_model: fiq + receive cycles a packet) has them
dropped by the router after 1.8 us, or by its binding when its 256-packet receive ring is
full. Producers of one core often finish together (the tiles of a layer, the reducers of
a dense layer) and then send at once: k of them, each as fast as it computes, send k
times faster than one. So each kernel core leaves a least time between two sends (its
gap) such that the senders of every reader, all sending at once, send no faster than it
takes packets in; the shares are max-min fair (:func:`send_gaps`). The senders of a
reader also wait rank x its cycles a packet in (their phase) at the first send after
being idle: the wait holds their compute back, so senders that finish together take
turns instead of sending k packets at once. The binding waits on its timer
(c_runtime/spin1/spin1_binding.h); the timed emulation spaces the core's sends the same
way. The live inputs (front-end-common's multicast source) are not ours to pace: the host
paces their messages (runtime.pacing), and each sends a message's packets as fast as it
parses them (tiling.cycle_model.input_core_cycles). That is faster than any core takes
packets in, so a reader a live input shares with kernels cannot leave it that rate: the
input takes its fair share there like a kernel, at most its own rate, and the host's pace
bounds what it sends on average (a reader that left the input its full rate left its
kernel senders none: a gap of MAX_CYCLES, 328 us a packet); the gatherer is taken as taking a packet in as a dense tile does
(tiling.cycle_model.gatherer_cycles). The chip-to-chip links are left to the host's pace
(runtime.pacing probes the timed emulation, links included) and to the placement order
(machine.builder): bounding them here as well, as if every sender on a route sent at
once, took ResNet-8 from 162 to 111 samples/s in the timed emulation.
"""
from __future__ import annotations

import math
from typing import Dict, List, Tuple

import numpy as np

from ..tiling import cycle_model
from ..tiling.cycle_model import cost
from .graph import INPUT, KERNEL, MachineGraphSpec

# The cycle model's kind of a reader, by the binary it runs (dense tiles i32 and i64 take a
# packet in alike).
_KIND_OF_BINARY = {"dense_tile.aplx": "dense_tile_i32", "dense_reduce.aplx": "dense_reduce",
                   "conv_tile.aplx": "conv_tile", "pool_tile.aplx": "pool_tile", "add_tile.aplx": "add_tile",
                   "conv_reduce.aplx": "conv_reduce"}

MAX_CYCLES = 0xFFFF  # a gap and a phase share the config header's word (16 bits each)


def send_gaps(spec: MachineGraphSpec) -> Dict[str, Tuple[int, int]]:
    """(gap, phase) in cycles of each kernel vertex of ``spec``.

    gap: the least time between two packets it sends. Every sender gets a packet rate
    (packets per cycle) such that the senders of a reader never send faster than it takes
    packets in (one per its cycles a packet in: the receive's short path,
    tiling.cycle_model.KernelCost.packet_in, and the entry lookups of the senders'
    interleaved packets, KernelCost.packet_in_among; the gatherer: gatherer_cycles), even when they
    all send at once. A live input sends at most one packet per
    tiling.cycle_model.input_core_cycles. Within those bounds the senders' rates are
    max-min fair in samples per cycle (progressive filling): every sender's sample rate
    grows alike, its packet rate being the sample rate x the packets it sends a sample
    (PartitionSpec.packets, all its partitions: a gap holds for every packet it sends); a
    full reader stops its senders' growth and the others go on. A sender of many packets
    so gets a larger share than one sending a halo row, and senders no full reader holds
    back are not slowed by one that holds back others.

    phase: the time it waits at its first send after being idle: its rank among the
    senders of the reader that stopped its growth x that reader's cycles a packet in, so
    that senders that finish together take turns. Both rounded up, at most MAX_CYCLES."""
    vertices = {v.label: v for v in spec.vertices}
    sent: Dict[str, float] = {}  # sender -> packets a sample (all partitions)
    members: Dict[str, List[str]] = {}  # reader -> its senders
    entries: Dict[str, int] = {}  # reader -> the partitions it receives (its receive entries)
    for part in spec.sender_partitions():
        if not part.posts:
            continue
        sent[part.pre] = sent.get(part.pre, 0.0) + max(1, part.packets)  # not known: as one
        for post in part.posts:
            entries[post] = entries.get(post, 0) + 1
            if part.pre not in members.setdefault(post, []):
                members[post].append(part.pre)
    cycles: Dict[str, float] = {
        r: cost(_KIND_OF_BINARY[vertices[r].binary]).packet_in_among(len(members[r]), entries[r])
        if vertices[r].kind == KERNEL
        else cycle_model.gatherer_cycles() for r in members}
    fixed = {s: 1.0 / cycle_model.input_core_cycles() for s in sent if vertices[s].kind == INPUT}
    rate, stopped_by = _fill(sent, members, cycles, fixed)
    out: Dict[str, Tuple[int, int]] = {}
    for pre, r in rate.items():
        if vertices[pre].kind != KERNEL:
            continue
        by = stopped_by[pre]
        gap = MAX_CYCLES if r <= 0 else 1.0 / r
        phase = sorted(s for s in members[by] if s not in fixed).index(pre) * cycles[by]
        out[pre] = (min(MAX_CYCLES, int(math.ceil(gap))), min(MAX_CYCLES, int(math.ceil(phase))))
    return out


def _fill(sent: Dict[str, float], members: Dict[str, List[str]], cycles: Dict[str, float],
          fixed: Dict[str, float]) -> Tuple[Dict[str, float], Dict[str, str]]:
    """Progressive filling: each sender's packet rate (packets per cycle) and the reader that
    stopped its growth. Reader r takes one packet per cycles[r]; sender s sends sent[s]
    packets a sample; the senders in ``fixed`` (the live inputs) grow as the others, up to
    that packet rate (then they stop on their own: no entry in the second dict)."""
    names = list(members)
    index = {r: i for i, r in enumerate(names)}
    room = np.array([1.0 / cycles[r] for r in names])  # packet rate left to share
    growing = np.zeros(len(names))  # packets a sample of the senders still growing
    of_sender: Dict[str, List[int]] = {}
    for r, senders in members.items():
        for s in senders:
            of_sender.setdefault(s, []).append(index[r])
            growing[index[r]] += sent[s]
    rate: Dict[str, float] = {}
    stopped_by: Dict[str, str] = {}

    def stop(s: str, level: float) -> None:
        rate[s] = level * sent[s]
        for j in of_sender[s]:
            growing[j] -= sent[s]
            room[j] -= rate[s]

    while True:
        live = growing > 0
        if not live.any():
            break
        levels = np.full(len(names), np.inf)
        levels[live] = np.maximum(0.0, room[live]) / growing[live]  # samples per cycle
        i = int(np.argmin(levels))
        capped = min(((fixed[s] / sent[s], s) for s in fixed if s not in rate), default=(np.inf, ""))
        if capped[0] < levels[i]:  # a live input reaches its own rate first
            stop(capped[1], capped[0])
            continue
        for s in members[names[i]]:
            if s not in rate:
                stopped_by[s] = names[i]
                stop(s, float(levels[i]))
        growing[i] = 0.0  # rounding: every sender of it is stopped
    return rate, stopped_by


def assign_send_gaps(spec: MachineGraphSpec) -> None:
    """Set every kernel vertex's VertexSpec.send_gap and send_phase (:func:`send_gaps`)."""
    gaps = send_gaps(spec)
    for v in spec.vertices:
        if v.kind == KERNEL:
            v.send_gap, v.send_phase = gaps.get(v.label, (0, 0))
