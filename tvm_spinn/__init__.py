"""tvm_spinn: run PyTorch, ONNX and TVM Relax models on SpiNNaker (emulated by default).

.. code-block:: python

    import tvm, tvm_spinn
    from tvm import relax
    mod = tvm_spinn.from_torch(model, (x,))
    ex = tvm_spinn.build(mod, calibration=x_calib)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    y = vm["main"](tvm.runtime.tensor(x)).numpy()
    print(tvm_spinn.statistics(vm).summary())

    # Without TVM: torch tensors in, torch tensors out.
    net = tvm_spinn.compile_torch(model, x, calibration=x_calib)
    y = net(x); print(net.statistics().summary())

``import tvm_spinn`` is quick: the public names below load on first use (TVM alone takes
about 1.6 s to import). The ``"spinnaker"`` target tag, Relax pipeline, codegen and module
loader are registered with TVM as soon as TVM is imported, before or after tvm_spinn, so
``tvm.compile(..., target="spinnaker")`` and ``tvm.runtime.load_module`` work after
``import tvm_spinn`` as they always did.
"""
import importlib
import importlib.util
import os

from .errors import (BoardError, CalibrationError, EmulatorError, InputError, LostSamplesError,  # noqa: F401
                     MappingError, ModelFileError, ProgramFormatError, ResourceError, SpinnakerError, UnsupportedError)

__version__ = "0.1.0"

# Public name -> the module that defines it, imported on first access (PEP 562).
_LAZY = {
    "build": "codegen.pipeline",
    "from_torch": "frontend.pytorch",
    "from_onnx": "frontend.onnx",
    "compile_torch": "torch_model",
    "partition_for_spinnaker": "partition",
    "executors": "runtime",
    "integer_reference": "runtime",
    "statistics": "runtime",
    "use_board": "runtime",
}
# Subpackages reachable as attributes (tvm_spinn.report.offload_report(ex), tvm_spinn.zoo.lenet5()).
_SUBMODULES = ("report", "zoo", "frontend", "runtime", "cli")
_ERRORS = (SpinnakerError, UnsupportedError, CalibrationError, ResourceError, MappingError, EmulatorError,
           InputError, ProgramFormatError, BoardError, LostSamplesError, ModelFileError)


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    elif name in _SUBMODULES or (not name.startswith("__")
                                 and importlib.util.find_spec(f"{__name__}.{name}") is not None):
        value = importlib.import_module(f".{name}", __name__)  # any subpackage, as eager imports gave
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | set(_SUBMODULES))


def _forward(module: str, name: str):
    """A callable that imports ``tvm_spinn.<module>`` when first called: TVM holds it from
    the moment TVM is imported, which may be in the middle of importing that very module."""
    def call(*args, **kwargs):
        return getattr(importlib.import_module(f".{module}", __name__), name)(*args, **kwargs)

    call.__name__ = name
    return call


def _register_with_tvm(tvm) -> None:
    """Make TVM know SpiNNaker (idempotent; runs once TVM is imported)."""
    import tvm_ffi
    from tvm.relax.pipeline import PIPELINE_MAP

    from ._native import load_runtime_library

    # A target tag so that tvm.compile(mod, target="spinnaker", ...) is accepted: the
    # host part compiles for the CPU; the offloaded part is chosen by the pipeline.
    if "spinnaker" not in (tvm.target.tag.list_tags() or {}):
        tvm.target.tag.register_tag("spinnaker", {"kind": "llvm", "keys": ["spinnaker", "cpu"]})
    # Keep our error types when they cross the FFI (e.g. raised inside a pass or the codegen).
    for cls in _ERRORS:
        tvm_ffi.register_error(cls.__name__, cls)
    # Ctrl-C inside a board call crosses TVM's callback boundary: keep it a KeyboardInterrupt
    # (unregistered, it would arrive as an empty RuntimeError).
    tvm_ffi.register_error("KeyboardInterrupt", KeyboardInterrupt)
    tvm_ffi.register_global_func("relax.ext.spinnaker", _forward("codegen.codegen", "_codegen"), override=True)
    tvm_ffi.register_global_func("tvm_spinn.runtime.create_executor",
                                 _forward("runtime.executor", "create_executor"), override=True)
    if "spinnaker" not in PIPELINE_MAP:
        tvm.relax.register_pipeline("spinnaker")(_forward("codegen.pipeline", "spinnaker_pipeline"))
    # replicas="auto" (codegen) times its candidate copy counts in the emulator (runtime)
    from . import hooks

    hooks.copies_chooser = _forward("runtime.copies", "choose")
    # Registers the "spinnaker" module kind and the loader tvm.runtime.load_module needs.
    load_runtime_library()
    from .runtime import vm_guard

    vm_guard.install()  # one call at a time per VM that runs SpiNNaker functions


if os.environ.get("TVM_SPINN_LIGHT_IMPORT") != "1":  # set only where TVM is not wanted (mapping worker)
    import wrapt

    # Runs now if TVM is already imported, else right after its import.
    wrapt.register_post_import_hook(_register_with_tvm, "tvm")
