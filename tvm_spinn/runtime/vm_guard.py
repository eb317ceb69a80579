"""Relax VMs that run SpiNNaker functions: one call at a time per VM, statistics per VM,
main's inputs checked and float64 converted before TVM sees them.

TVM's Relax VM keeps one register file per VM, so two threads calling one VM at once
corrupt it (a segfault, or a check failure naming a register, in plain TVM too). For a VM
whose executable holds ``"spinnaker"`` modules, :func:`install` makes the functions
``vm[name]``, ``vm.invoke_closure`` and ``vm.invoke_stateful`` hand out take the VM's
lock: threads sharing a VM wait for each other (one VM per thread runs in parallel up to
the board, which runs one stream at a time). While a call runs, :func:`current` names the
VM's :class:`VMRecord`, where the executors keep that VM's call state and statistics.
Other VMs are left exactly as TVM makes them.
"""
from __future__ import annotations

import logging
import threading
import weakref
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..errors import InputError

log = logging.getLogger(__name__)
_local = threading.local()  # the VMRecord of the call running in this thread


@dataclass(frozen=True)
class Param:
    """One input of main: its name, dtype and shape (a symbolic dimension negative, one number
    per variable), as :func:`tvm_spinn.codegen.pipeline.signature` gives them."""

    name: str
    dtype: str
    shape: Tuple[Optional[int], ...]

    def describe(self) -> str:
        dims = ", ".join("batch" if d < 0 and i == 0 else "?" if d < 0 else str(d)
                         for i, d in enumerate(self.shape))
        return f"({dims}) {self.dtype}"


class VMRecord:
    """What tvm_spinn keeps per VM: its lock, the call state of each of its executors
    (weakly: an executor dies with its executable), main's signature (may be empty)."""

    def __init__(self, signature: Dict[str, list]) -> None:
        self.lock = threading.RLock()
        self.states: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
        self.params = {name: [Param(*p) for p in params] for name, params in signature.items()}
        self.warned_float64 = False


# main's inputs as the program of each linked spinnaker module stores them, by module
# instance (executors remember them while they live), for the VMs that link the module.
_stored_signatures: Dict[int, Dict[str, list]] = {}


def remember_signature(instance_id: int, main_inputs) -> None:
    """Keep main's inputs ((name, dtype, shape) each, as BoardProgram.main_inputs) that module
    instance ``instance_id``'s program stores, for the VMs that link it."""
    if main_inputs:
        _stored_signatures[int(instance_id)] = {"main": [
            (str(n), str(d), tuple(int(s) for s in shape)) for n, d, shape in main_inputs]}


def forget_signature(instance_id: int) -> None:
    """Drop what :func:`remember_signature` kept for module instance ``instance_id`` (no-op if none)."""
    _stored_signatures.pop(int(instance_id), None)


def _stored_signature(modules) -> Dict[str, list]:
    for m in modules:
        found = _stored_signatures.get(int(m["spinnaker_instance_id"]()))
        if found:
            return found
    return {}


def current() -> Optional[VMRecord]:
    """The record of the VM whose call runs in this thread (None outside a guarded call)."""
    return getattr(_local, "record", None)


def record_of(vm) -> Optional[VMRecord]:
    """The :class:`VMRecord` of a guarded VM (or of a model compile_torch returns), else None."""
    return getattr(_unwrap(vm), "_spinnaker_record", None)


def _unwrap(obj):
    """A model compile_torch returns stands for its VM (tvm_spinn.torch_model.SpiNNakerModel.vm),
    so statistics, executors, use_board and the reports take it as they take a VM."""
    from tvm.runtime.vm import VirtualMachine

    vm = getattr(obj, "vm", None)
    return vm if isinstance(vm, VirtualMachine) else obj


def _convert_inputs(record: VMRecord, name: str, args: tuple) -> tuple:
    """main's tensor inputs checked against its signature: float64 (numpy's default) becomes
    the input's dtype (a warning the first time); a wrong shape or dtype is an InputError
    with the expected and the received shape and dtype, and so are a wrong number of inputs
    and inputs that disagree on a dimension they share (the batch)."""
    import tvm

    params = record.params.get(name)
    if not params:
        return args
    if len(args) != len(params):
        raise InputError(f"{name} takes {len(params)} input(s) ({', '.join(p.name for p in params)}), received "
                         f"{len(args)}")
    out, bound = [], {}  # symbolic dimension -> (its value, the input that set it)
    for arg, param in zip(args, params):
        is_np = isinstance(arg, np.ndarray)
        if not (is_np or isinstance(arg, tvm.runtime.Tensor)):
            out.append(arg)
            continue
        shape, dtype = tuple(arg.shape), str(arg.dtype)
        which = f"input {param.name!r}" if len(params) > 1 else "input"
        if len(shape) != len(param.shape) or any(w >= 0 and w != int(s) for w, s in zip(param.shape, shape)):
            raise InputError(f"{which} of {name}: expected shape {param.describe()}, received "
                             f"{tuple(int(s) for s in shape)} {dtype}")
        for axis, (w, s) in enumerate(zip(param.shape, shape)):
            seen = bound.setdefault(w, (int(s), param.name)) if w < 0 else (int(s), param.name)
            if seen[0] != int(s):
                what = "batch" if axis == 0 else f"axis {axis}"
                raise InputError(f"{which} of {name}: its {what} is {int(s)}, input {seen[1]!r} has {seen[0]}: "
                                 "the inputs share this dimension")
        if dtype != param.dtype:
            if dtype == "float64" and param.dtype.startswith("float"):
                if not record.warned_float64:
                    log.warning("%s of %s is float64 (numpy's default); converted to %s (this warning is shown "
                                "once per VM)", which, name, param.dtype)
                    record.warned_float64 = True
                value = (arg if is_np else arg.numpy()).astype(param.dtype)
                arg = value if is_np else tvm.runtime.tensor(value, arg.device)
            else:
                raise InputError(f"{which} of {name}: expected shape {param.describe()}, received "
                                 f"{tuple(int(s) for s in shape)} {dtype}: convert it with .astype('{param.dtype}')")
        out.append(arg)
    return tuple(out)


class GuardedFunction:
    """A function of a guarded VM: calls take the VM's lock and name its record."""

    def __init__(self, func, record: VMRecord, name: Optional[str] = None) -> None:
        self._func, self._record, self._name = func, record, name

    def __call__(self, *args):
        if self._name is not None:
            args = _convert_inputs(self._record, self._name, args)
        with self._record.lock:
            previous, _local.record = current(), self._record
            try:
                return self._func(*args)
            finally:
                _local.record = previous

    def __getattr__(self, attr):
        return getattr(self._func, attr)


def spinnaker_modules(obj) -> list:
    """The ``"spinnaker"`` runtime modules inside an executable, VM, module or a model
    compile_torch returns (once each)."""
    mod = getattr(_unwrap(obj), "mod", _unwrap(obj))
    mod = getattr(mod, "module", mod)  # VirtualMachine keeps its module in .module
    found, stack, seen = [], [mod], set()
    while stack:
        m = stack.pop()
        if getattr(m, "kind", None) == "spinnaker":
            ident = int(m["spinnaker_instance_id"]())
            if ident not in seen:
                seen.add(ident)
                found.append(m)
        stack.extend(getattr(m, "imports", []) or [])
    return found


def install() -> None:
    """Guard every Relax VM created from now on whose module holds spinnaker modules (idempotent)."""
    from tvm.runtime.vm import VirtualMachine

    if getattr(VirtualMachine, "_spinnaker_guarded", False):
        return
    init, getitem = VirtualMachine.__init__, VirtualMachine.__getitem__
    invoke_closure, invoke_stateful = VirtualMachine.invoke_closure, VirtualMachine.invoke_stateful

    def __init__(self, rt_mod, device, memory_cfg=None):
        init(self, rt_mod, device, memory_cfg)
        modules = spinnaker_modules(self)
        if modules:
            self._spinnaker_record = VMRecord(_stored_signature(modules))

    def __getitem__(self, key):
        func, record = getitem(self, key), record_of(self)
        return func if record is None else GuardedFunction(func, record, key)

    def guarded(method):
        def call(self, *args, **kwargs):
            record = record_of(self)
            if record is None:
                return method(self, *args, **kwargs)
            return GuardedFunction(lambda: method(self, *args, **kwargs), record)()
        call.__doc__ = method.__doc__
        return call

    VirtualMachine.__init__ = __init__
    VirtualMachine.__getitem__ = __getitem__
    VirtualMachine.invoke_closure = guarded(invoke_closure)
    VirtualMachine.invoke_stateful = guarded(invoke_stateful)
    VirtualMachine._spinnaker_guarded = True
