"""Send gaps: the least time a kernel core leaves between two packets it sends, so that
the cores reading it are not sent packets faster than they take them in.

Nothing on a board holds a sender back: a core whose packets come faster than its FIQ
and drain take them in (tiling.cycle_model: fiq + receive cycles a packet) has them
dropped by the router after 1.8 us, or by its binding when its 256-packet receive ring is
full. Producers of one core often finish together (the tiles of a layer, the reducers of
a dense layer) and then send at once: k of them, each as fast as it computes, send k
times faster than one. So each kernel core leaves at least k x (the reader's cycles a
packet in) between two sends, for the largest such product over the cores it sends to
(k: how many cores send to that reader), and the k senders of that reader wait rank x
the reader's cycles a packet in (their phase) at the first send after being idle: the wait
holds their compute back, so senders that finish together stay apart instead of sending
k packets at once. The binding waits on its timer
(c_runtime/spin1/spin1_binding.h); the timed emulation spaces the core's sends the same
way. The live inputs (front-end-common's multicast source) are paced by the host
(runtime.pacing); the gatherer is taken as taking a packet in as a dense tile does
(runtime.timing.LPG_CYCLES).
"""
from __future__ import annotations

import math
from typing import Dict, List, Tuple

from ..tiling.cycle_model import cost
from .graph import KERNEL, MachineGraphSpec

# The cycle model's kind of a reader, by the binary it runs (dense tiles i32 and i64 take a
# packet in alike); any other reader (the live packet gatherer) as a dense tile.
_KIND_OF_BINARY = {"dense_tile.aplx": "dense_tile_i32", "dense_reduce.aplx": "dense_reduce",
                   "conv_tile.aplx": "conv_tile", "pool_tile.aplx": "pool_tile", "add_tile.aplx": "add_tile",
                   "conv_reduce.aplx": "conv_reduce"}
_OTHER_READER = "dense_tile_i32"


MAX_CYCLES = 0xFFFF  # a gap and a phase share the config header's word (16 bits each)


def send_gaps(spec: MachineGraphSpec) -> Dict[str, Tuple[int, int]]:
    """(gap, phase) in cycles of each kernel vertex of ``spec``: the least time between two
    packets it sends, max over the vertices it sends to of (their senders) x (their cycles a
    packet in, the receive's short path: tiling.cycle_model.KernelCost.packet_in); and the
    time it waits at its first send after being idle, its rank among that reader's senders
    x the reader's cycles a packet in, so that senders that finish together take turns.
    Both rounded up, at most MAX_CYCLES."""
    vertices = {v.label: v for v in spec.vertices}
    senders: Dict[str, List[str]] = {}
    for part in spec.sender_partitions():
        for post in part.posts:
            if part.pre not in senders.setdefault(post, []):
                senders[post].append(part.pre)

    def packet_in(label: str) -> float:
        return cost(_KIND_OF_BINARY.get(vertices[label].binary, _OTHER_READER)).packet_in

    out: Dict[str, Tuple[int, int]] = {}
    for part in spec.sender_partitions():
        if vertices[part.pre].kind != KERNEL or not part.posts:
            continue
        reader = max(part.posts, key=lambda post: len(senders[post]) * packet_in(post))
        gap = len(senders[reader]) * packet_in(reader)
        phase = sorted(senders[reader]).index(part.pre) * packet_in(reader)
        if gap >= out.get(part.pre, (0, 0))[0]:
            out[part.pre] = (min(MAX_CYCLES, int(math.ceil(gap))), min(MAX_CYCLES, int(math.ceil(phase))))
    return out


def assign_send_gaps(spec: MachineGraphSpec) -> None:
    """Set every kernel vertex's VertexSpec.send_gap and send_phase (:func:`send_gaps`)."""
    gaps = send_gaps(spec)
    for v in spec.vertices:
        if v.kind == KERNEL:
            v.send_gap, v.send_phase = gaps.get(v.label, (0, 0))
