"""What a build put on the board and what it kept on the host, op by op, and why.

Board ops are the ``spinnaker.*`` composites of the offloaded functions (a dense layer
with its bias and activation is one op). Host ops are the Relax operators left in
``main`` and in offloaded functions that were kept on the host, except pure layout ops
(reshape, permute_dims, ...), which carry no arithmetic.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import tvm
from tvm import relax

from ..frontend.origin import origin_of
from ..graph.extract import composite_origin
from ..partition import CODEGEN
from ..partition.patterns import ACTIVATION_OPS

# Ops that only move or view data.
LAYOUT_OPS = {"relax.reshape", "relax.permute_dims", "relax.expand_dims", "relax.squeeze", "relax.flatten",
              "relax.astype", "relax.broadcast_to", "relax.zeros_like", "relax.zeros", "relax.ones", "relax.full",
              "relax.strided_slice", "relax.take", "relax.split", "relax.wrap_param",
              "relax.call_tir", "relax.call_dps_packed"}
# Ops a spinnaker composite can hold: on the host, one of them was refused by its check.
BOARD_OPS = {"relax.matmul", "relax.nn.conv1d", "relax.nn.conv2d", "relax.nn.max_pool2d", "relax.nn.avg_pool2d",
             "relax.add", "relax.mean", "relax.nn.batch_norm", "relax.nn.pad"} | set(ACTIVATION_OPS.values())


def short_name(symbol: str, limit: int = 60) -> str:
    return symbol if len(symbol) <= limit else symbol[:limit - 3] + "..."


@dataclass
class OffloadSummary:
    """board: (function, composite) of every op on the board; host: (op, why) of every op on
    the host; refused: offloaded functions kept on the host, and why; titles: the readable
    name of each function ("function 2 (features.3 .. head)"); origins: the torch module
    of each board op, then of each host op ("" where unknown)."""

    board: List[Tuple[str, str]] = field(default_factory=list)
    host: List[Tuple[str, str]] = field(default_factory=list)
    refused: Dict[str, str] = field(default_factory=dict)
    titles: Dict[str, str] = field(default_factory=dict)
    origins: List[str] = field(default_factory=list)

    def line(self) -> str:
        """One line: "12 of 14 ops on SpiNNaker; on the host: 2 x nn.gelu (why)"."""
        total = len(self.board) + len(self.host)
        text = f"{len(self.board)} of {total} ops on SpiNNaker"
        if self.host:
            counts = Counter(self.host)
            text += "; on the host: " + ", ".join(
                f"{n} x {op} ({why if len(why) < 90 else why[:87] + '...'})" for (op, why), n in counts.items())
        return text

    def rows(self) -> List[Tuple[str, str, str]]:
        """(op, where, why) for every op: the board ones first; an op imported from a torch
        module is followed by the module's path: "spinnaker.conv2d_bias_relu (features.0)"."""
        origins = self.origins or [""] * (len(self.board) + len(self.host))
        ops = [comp for _, comp in self.board] + [op for op, _ in self.host]
        ops = [f"{op} ({where})" if where else op for op, where in zip(ops, origins)]
        wheres = [f"board ({self.title(fn)})" for fn, _ in self.board] + ["host"] * len(self.host)
        whys = [""] * len(self.board) + [why for _, why in self.host]
        return list(zip(ops, wheres, whys))

    def title(self, symbol: str) -> str:
        """The readable name of an offloaded function (its symbol, shortened, if it has none)."""
        return self.titles.get(symbol) or short_name(symbol, 40)


def _calls(func: relax.Function) -> List[relax.Call]:
    found: List[relax.Call] = []

    def visit(expr):
        if isinstance(expr, relax.Call):
            found.append(expr)

    relax.analysis.post_order_visit(func.body, visit)
    return found


def _why(op: str) -> str:
    if op in BOARD_OPS:
        return "refused by its pattern's check: operands, attributes or dtype the board does not support"
    return "not an op the board computes"


def offload_summary(original: tvm.IRModule, partitioned: tvm.IRModule, refused: Dict[str, str],
                    titles: Optional[Dict[str, str]] = None) -> OffloadSummary:
    """The summary of a partitioned module (after the functions in ``refused`` were put back
    on the host); titles: symbol -> readable name of each offloaded function."""
    summary = OffloadSummary(refused=dict(refused), titles=dict(titles or {}))
    host_origins: List[str] = []
    lifted_from = {}  # host functions made from refused offloaded functions -> why
    for symbol, why in refused.items():
        for gv in partitioned.functions:
            if gv.name_hint.startswith(symbol):
                lifted_from[gv.name_hint] = why
    for gv, func in partitioned.functions.items():
        if not isinstance(func, relax.Function):
            continue
        if func.attrs is not None and func.attrs.get("Codegen") == CODEGEN:
            for binding in (b for block in func.body.blocks for b in block.bindings):
                if isinstance(binding.value, relax.Function) and binding.value.attrs is not None \
                        and "Composite" in binding.value.attrs:
                    summary.board.append((str(func.attrs["global_symbol"]), str(binding.value.attrs["Composite"])))
                    summary.origins.append((composite_origin(binding.value) or ("",))[0])
            continue
        is_main = gv.name_hint == "main"
        if not is_main and gv.name_hint not in lifted_from:
            continue
        for call in _calls(func):
            if isinstance(call.op, tvm.ir.Op) and call.op.name not in LAYOUT_OPS:
                name = call.op.name.replace("relax.", "")
                summary.host.append((name, lifted_from.get(gv.name_hint) or _why(call.op.name)))
                host_origins.append((origin_of(call) or ("",))[0])
    summary.origins += host_origins
    return summary
