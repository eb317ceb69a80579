"""The C++ runtime module of kind "spinnaker" (codegen/spinnaker_module.cc).

A test-local executor factory stands in for the real runtime: it multiplies its
input by a factor read from the payload (b"2" -> doubling) into the output.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tvm
import tvm_ffi
from tvm import relax

from tvm_spinn import _native

EXECUTOR_GLOBAL = "tvm_spinn.runtime.create_executor"
SHAPE = (2, 3)

# (symbol, payload, instance_id) of every executor created in this process.
CREATED: list[tuple[str, bytes, int]] = []


def create_test_executor(symbol: str, payload: bytes, instance_id: int) -> tvm_ffi.Function:
    """Executor factory: out = input * int(payload)."""
    CREATED.append((symbol, bytes(payload), int(instance_id)))
    factor = float(bytes(payload).decode())

    def run(x: tvm.runtime.Tensor, out: tvm.runtime.Tensor) -> None:
        out.copyfrom(x.numpy() * factor)

    return run


def register_test_executor() -> tvm_ffi.Function | None:
    """Install the test factory; returns the previously registered one (or None)."""
    previous = tvm_ffi.get_global_func(EXECUTOR_GLOBAL, allow_missing=True)
    tvm_ffi.register_global_func(EXECUTOR_GLOBAL, create_test_executor, override=True)
    return previous


@pytest.fixture
def test_executor() -> Iterator[list[tuple[str, bytes, int]]]:
    previous = register_test_executor()
    CREATED.clear()
    yield CREATED
    if previous is not None:
        tvm_ffi.register_global_func(EXECUTOR_GLOBAL, previous, override=True)
    else:
        tvm_ffi.remove_global_func(EXECUTOR_GLOBAL)


def build_executable(*mods: tvm_ffi.Module) -> relax.VMExecutable:
    """main(x) = mods[-1](...mods[0](x)), each step an R.call_dps_packed.

    The runtime modules go into the IRModule attribute "external_mods", which
    is where RunCodegen puts BYOC modules; tvm.compile links them into the
    executable as imports.
    """
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(SHAPE, "float32"))
    with bb.function("main", [x]):
        y = x
        for m in mods:
            y = bb.emit(
                relax.op.call_dps_packed(
                    m["spinnaker_symbol"](), (y,), relax.TensorType(SHAPE, "float32")
                )
            )
        bb.emit_func_output(y)
    irmod = bb.get().with_attr("external_mods", list(mods))
    return tvm.compile(irmod, target="llvm")


def _input() -> np.ndarray:
    return np.arange(np.prod(SHAPE), dtype="float32").reshape(SHAPE) - 2.5


def _spinnaker_imports(rt_mod: tvm.runtime.Module) -> list[tvm.runtime.Module]:
    return [m for m in rt_mod.imports if m.kind == "spinnaker"]


def test_module_properties() -> None:
    a = _native.make_module("spinn_a", b"2")
    b = _native.make_module("spinn_b", b"\x00\xffbinary")
    assert a.kind == "spinnaker"
    assert a.is_binary_serializable() and a.is_runnable()
    assert a["spinnaker_symbol"]() == "spinn_a"
    assert bytes(b["spinnaker_payload"]()) == b"\x00\xffbinary"
    assert a["spinnaker_instance_id"]() != b["spinnaker_instance_id"]()
    assert a.implements_function("spinn_a") and not a.implements_function("spinn_b")
    assert not a.implements_function("nope")


def test_load_runtime_library_once() -> None:
    assert _native.load_runtime_library() is _native.load_runtime_library()


def test_run_in_vm_executor_created_once(test_executor: list) -> None:
    mod = _native.make_module("spinn_double", b"2")
    ex = build_executable(mod)
    assert test_executor == []  # building does not create the executor
    vm = relax.VirtualMachine(ex, tvm.cpu())
    # Created when the VM links the symbol, before the first call.
    assert len(test_executor) == 1
    x = _input()
    for _ in range(3):
        np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(x)).numpy(), 2 * x)
    # A second VM on the same executable uses the same (jitted) module instance.
    vm2 = relax.VirtualMachine(ex, tvm.cpu())
    np.testing.assert_array_equal(vm2["main"](tvm.runtime.tensor(x)).numpy(), 2 * x)
    assert len(test_executor) == 1
    symbol, payload, instance_id = test_executor[0]
    assert (symbol, payload) == ("spinn_double", b"2")
    # The VM runs the module instance found in the jitted executable's imports.
    (linked,) = _spinnaker_imports(ex.jit())
    assert linked["spinnaker_instance_id"]() == instance_id


def test_two_modules_side_by_side(test_executor: list) -> None:
    ex = build_executable(
        _native.make_module("spinn_times2", b"2"), _native.make_module("spinn_times3", b"3")
    )
    vm = relax.VirtualMachine(ex, tvm.cpu())
    x = _input()
    np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(x)).numpy(), 6 * x)
    assert sorted(s for s, _, _ in test_executor) == ["spinn_times2", "spinn_times3"]
    assert len({i for _, _, i in test_executor}) == 2


def test_missing_executor_factory_error(test_executor: list) -> None:
    tvm_ffi.remove_global_func(EXECUTOR_GLOBAL)  # the fixture restores it
    mod = _native.make_module("spinn_orphan", b"2")
    with pytest.raises(Exception, match="import tvm_spinn before loading a spinnaker module"):
        mod["spinn_orphan"]


_SUBPROCESS = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tvm
    from tvm import relax
    sys.path.insert(0, {tests_dir!r})
    import test_runtime_module as t
    from tvm_spinn import _native
    _native.load_runtime_library()  # registers ffi.Module.load_from_bytes.spinnaker
    t.register_test_executor()
    lib = tvm.runtime.load_module({path!r})
    vm = relax.VirtualMachine(lib, tvm.cpu())
    x = t._input()
    y1 = vm["main"](tvm.runtime.tensor(x)).numpy()
    y2 = vm["main"](tvm.runtime.tensor(x)).numpy()
    print(json.dumps({{
        "ok": bool(np.array_equal(y1, 6 * x) and np.array_equal(y2, 6 * x)),
        "created": [[s, p.decode(), i] for s, p, i in t.CREATED],
        "imports": [[m["spinnaker_symbol"](), m["spinnaker_instance_id"]()]
                    for m in t._spinnaker_imports(lib)],
    }}))
    """
)


def test_export_library_and_load_in_fresh_process(tmp_path: Path) -> None:
    ex = build_executable(
        _native.make_module("spinn_x2", b"2"), _native.make_module("spinn_x3", b"3")
    )
    path = tmp_path / "spinn_exec.so"
    ex.export_library(str(path))
    script = _SUBPROCESS.format(tests_dir=str(Path(__file__).parent), path=str(path))
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["ok"]
    created = sorted(result["created"])
    assert [(s, p) for s, p, _ in created] == [("spinn_x2", "2"), ("spinn_x3", "3")]
    # Loaded modules are new instances with their own ids, one executor each.
    assert sorted(result["imports"]) == sorted([s, i] for s, _, i in created)
