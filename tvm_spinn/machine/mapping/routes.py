"""Follow a multicast key through a MappingResult's routing tables, as the routers would.

Router semantics (SpiNNaker): entries are tried in table order and the first one with
``key & mask == entry_key`` wins; its route word sends the packet on link i for bit i
(0..5 = E, NE, N, W, SW, S) and to core p for bit 6 + p. With no matching entry a packet
that arrived on link L leaves on the opposite link (L + 3) % 6 ("default routing"); one
injected by a local core is dropped.
"""
from __future__ import annotations

from collections import deque
from typing import List, Optional, Set, Tuple

import numpy as np

from ...errors import MappingError
from ..graph import MappingResult

N_LINKS = 6


def lookup(table: Optional[np.ndarray], key: int) -> Optional[int]:
    """Route word of the first entry matching ``key``, or None."""
    if table is None or len(table) == 0:
        return None
    k = np.uint32(key)
    hits = np.nonzero((k & table[:, 1]) == table[:, 0])[0]
    return int(table[hits[0], 2]) if len(hits) else None


def trace_route(
    result: MappingResult, src_chip: Tuple[int, int], key: int
) -> Tuple[Set[Tuple[int, int, int]], List[Tuple[int, int, int]]]:
    """Deliver one packet with ``key`` injected by a core on ``src_chip``.

    Returns (cores (x, y, p) that receive it, links (x, y, link) it leaves chips on, in
    breadth-first order). Raises MappingError if the packet would take a link that does
    not exist or would loop.
    """
    delivered: Set[Tuple[int, int, int]] = set()
    traversed: List[Tuple[int, int, int]] = []
    seen: Set[Tuple[int, int, Optional[int]]] = set()
    queue = deque([(src_chip[0], src_chip[1], None)])  # (x, y, arrival link or None)
    while queue:
        x, y, arrived = queue.popleft()
        if (x, y, arrived) in seen:
            raise MappingError(f"key 0x{key:08x} from chip {src_chip} loops back into chip ({x}, {y})")
        seen.add((x, y, arrived))
        route = lookup(result.routing_tables.get((x, y)), key)
        if route is None:
            if arrived is None:
                continue  # injected locally with no entry: the router drops it
            route = 1 << ((arrived + 3) % N_LINKS)  # default routing: straight through
        for p in range(N_LINKS, 32):
            if route >> p & 1:
                delivered.add((x, y, p - N_LINKS))
        for link in range(N_LINKS):
            if route >> link & 1:
                dest = result.links.get((x, y, link))
                if dest is None:
                    raise MappingError(f"key 0x{key:08x}: chip ({x}, {y}) sends on link {link}, which does not exist")
                traversed.append((x, y, link))
                queue.append((dest[0], dest[1], (link + 3) % N_LINKS))
    return delivered, traversed


def check_router_tables(result: MappingResult) -> List[str]:
    """One message per chip whose table exceeds the router's application entries."""
    return [
        f"chip {xy} needs {len(t)} entries, the router has {result.max_router_entries}"
        for xy, t in sorted(result.routing_tables.items())
        if len(t) > result.max_router_entries
    ]
