"""The board programs a report reads: those inside an executable, VM or module."""
from __future__ import annotations

from typing import Any, List

from ..program import BoardProgram, load_program
from ..runtime.executor import spinnaker_modules


def programs(obj: Any) -> List[BoardProgram]:
    """The programs of the ``"spinnaker"`` modules inside ``obj`` (executable, VM or module),
    read from each module's payload, so this works before a VM exists; in the order main
    calls them."""
    found = [load_program(bytes(m["spinnaker_payload"]())) for m in spinnaker_modules(obj)]
    return sorted(found, key=lambda p: (p.run_order, p.symbol))
