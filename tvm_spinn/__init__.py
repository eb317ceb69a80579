"""tvm_spinn: run PyTorch and TVM Relax models on SpiNNaker (emulated by default).

.. code-block:: python

    import tvm, tvm_spinn
    from tvm import relax
    mod = tvm_spinn.from_torch(model, (x,))
    ex = tvm_spinn.build(mod, calibration=x_calib)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    y = vm["main"](tvm.runtime.tensor(x)).numpy()
    print(tvm_spinn.statistics(vm).summary())
"""
import os

from .errors import (BoardError, CalibrationError, EmulatorError, InputError, LostSamplesError,  # noqa: F401
                     MappingError, ProgramFormatError, ResourceError, SpinnakerError, UnsupportedError)

__version__ = "0.1.0"

if os.environ.get("TVM_SPINN_LIGHT_IMPORT") != "1":  # set only in the mapping worker
    import tvm

    from . import report  # noqa: F401  (tvm_spinn.report.offload_report(ex), model_report(ex), ...)
    from . import runtime as _runtime
    from ._native import load_runtime_library
    from .codegen import codegen as _codegen
    from .codegen import pipeline as _pipeline
    from .codegen.pipeline import build  # noqa: F401
    from .frontend import from_torch  # noqa: F401
    from .partition import partition_for_spinnaker  # noqa: F401
    from .runtime import executors, integer_reference, statistics, use_board  # noqa: F401

    # A target tag so that tvm.compile(mod, target="spinnaker", ...) is accepted: the
    # host part compiles for the CPU; the offloaded part is chosen by the pipeline.
    if "spinnaker" not in (tvm.target.tag.list_tags() or {}):
        tvm.target.tag.register_tag("spinnaker", {"kind": "llvm", "keys": ["spinnaker", "cpu"]})
    # Keep our error types when they cross the FFI (e.g. raised inside a pass or the codegen).
    import tvm_ffi

    for _cls in (SpinnakerError, UnsupportedError, CalibrationError, ResourceError, MappingError, EmulatorError,
                 InputError, ProgramFormatError, BoardError, LostSamplesError):
        tvm_ffi.register_error(_cls.__name__, _cls)
    # Ctrl-C inside a board call crosses TVM's callback boundary: keep it a KeyboardInterrupt
    # (unregistered, it would arrive as an empty RuntimeError).
    tvm_ffi.register_error("KeyboardInterrupt", KeyboardInterrupt)
    _codegen.register()
    _runtime.register()
    _pipeline.register()
    load_runtime_library()
