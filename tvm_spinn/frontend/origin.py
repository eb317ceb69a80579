"""Where an op came from in the user's model: the module path (``features.3``) and class
(``Conv2d``) of a PyTorch module, carried on the Relax calls as their span.

The torch frontend sets the span of every call it emits for a module's node
(:func:`origin_span`); the partitioner's rewrites keep it; the graph extraction reads
it back (:func:`origin_of`) to name the layer the way the user's model does.
"""
from __future__ import annotations

from typing import Optional, Tuple

import tvm

# The span's source name: "torch:<module path>:<class name>".
_PREFIX = "torch:"


def origin_span(path: str, kind: str) -> Optional[tvm.ir.Span]:
    """A span naming the module ``path`` of class ``kind`` (None for the root module ``""``,
    which names nothing a user wrote)."""
    if not path:
        return None
    return tvm.ir.Span(tvm.ir.SourceName(f"{_PREFIX}{path}:{kind}"), 0, 0, 0, 0)


def origin_of(expr) -> Optional[Tuple[str, str]]:
    """(module path, class name) of a Relax expression imported from a torch module, else None."""
    span = getattr(expr, "span", None)
    name = str(span.source_name.name) if span is not None and span.source_name is not None else ""
    if not name.startswith(_PREFIX):
        return None
    path, _, kind = name[len(_PREFIX):].rpartition(":")
    return (path, kind) if path else None


def with_span(call, span: Optional[tvm.ir.Span]):
    """``call`` (a not yet normalised relax.Call) with ``span``; other expressions unchanged."""
    from tvm import relax

    if span is None or not isinstance(call, relax.Call):
        return call
    return relax.Call(call.op, call.args, call.attrs, call.ty_args, span)
