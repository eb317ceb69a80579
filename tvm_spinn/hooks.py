"""Calls from a stage into a later one, installed by the package root.

The stages import only earlier ones (tools/import_graph.py), but a few build decisions need
a later stage's answer: ``replicas="auto"`` (codegen) times its candidate copy counts in the
timed emulation (runtime). The package root (``tvm_spinn/__init__.py``) installs such
callables here when TVM is imported, as it registers the codegen and the runtime with TVM;
until then each is None and its caller falls back (documented there).
"""
from __future__ import annotations

from typing import Callable, Optional

# tvm_spinn.runtime.copies.choose(build, most, boards) -> (copies, programs): the copy
# count "auto" keeps (codegen.codegen.compile_functions).
copies_chooser: Optional[Callable] = None
