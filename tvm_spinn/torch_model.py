"""A PyTorch model compiled for SpiNNaker that takes and returns torch tensors: for people
who never touch TVM.

.. code-block:: python

    net = tvm_spinn.compile_torch(model, x_example, calibration=train_loader)
    y = net(x)                          # torch.Tensor in, torch.Tensor out
    print(net.statistics().summary())   # packets counted; latency, throughput modelled
"""
from __future__ import annotations

import logging
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import tvm
from tvm import relax

from .codegen.pipeline import build
from .errors import InputError
from .frontend.pytorch import from_torch
from .runtime import statistics
from .runtime.stats import RunStatistics

log = logging.getLogger(__name__)


class SpiNNakerModel:
    """A compiled model called like the torch module it came from.

    ``model(*inputs)`` takes torch tensors (batch first, the example's dtypes, float64
    converted with a warning; any batch size if compiled with ``dynamic_batch=True``) and
    returns a tensor, or a tuple for a model with several outputs, on the first input's
    device. The offloaded layers run on the board ``TVM_SPINN_BOARD`` names (the emulator by
    default) in int16, the rest on the host CPU through TVM. ``executable`` (a Relax VM
    executable: ``.export_library(path)``) and ``vm`` are there for those who want TVM after
    all; the reports, plots and ``tvm_spinn.statistics`` take the model itself as its VM.
    """

    def __init__(self, executable, example_inputs: Sequence[torch.Tensor], dynamic_batch: bool) -> None:
        self.executable = executable
        self.vm = relax.VirtualMachine(executable, tvm.cpu())
        # (per-sample shape, dtype) of each input, and the baked-in batch when not dynamic.
        self._inputs = [(tuple(x.shape[1:]), x.dtype, None if dynamic_batch else x.shape[0])
                        for x in example_inputs]
        self._warned_float64 = False

    def _check(self, k: int, x: Any) -> np.ndarray:
        if not isinstance(x, torch.Tensor):
            raise InputError(f"input {k}: expected a torch.Tensor, got {type(x).__name__}")
        shape, dtype, batch = self._inputs[k]
        want = f"({'batch' if batch is None else batch}, {', '.join(map(str, shape))}) {dtype}"
        if x.dtype == torch.float64 and dtype.is_floating_point:  # as the VM does: converted, said once
            if not self._warned_float64:
                log.warning("input %d is float64; converted to %s, the model's input dtype (this warning is shown "
                            "once per model)", k, dtype)
                self._warned_float64 = True
            x = x.to(dtype)
        if x.ndim == 0 or tuple(x.shape[1:]) != shape or x.dtype != dtype or batch not in (None, x.shape[0]):
            raise InputError(f"input {k}: expected a tensor of shape {want}, got {tuple(x.shape)} {x.dtype}")
        return np.ascontiguousarray(x.detach().cpu().numpy())

    def __call__(self, *inputs: torch.Tensor) -> Union[torch.Tensor, Tuple[torch.Tensor, ...]]:
        if len(inputs) != len(self._inputs):
            raise InputError(f"the model takes {len(self._inputs)} input(s), got {len(inputs)}")
        arrays = [tvm.runtime.tensor(self._check(k, x)) for k, x in enumerate(inputs)]
        out = self.vm["main"](*arrays)
        device = inputs[0].device
        if isinstance(out, tvm.runtime.Tensor):
            return torch.from_numpy(out.numpy()).to(device)
        return tuple(torch.from_numpy(o.numpy()).to(device) for o in out)

    def statistics(self) -> Optional[RunStatistics]:
        """Statistics of the last call (:class:`tvm_spinn.runtime.RunStatistics`; None before
        the first call or when nothing is offloaded): counted packets, modelled latency,
        throughput and energy; ``.summary()`` is one line of them."""
        return statistics(self.vm)


def compile_torch(model: torch.nn.Module, example_inputs: Union[torch.Tensor, Sequence[torch.Tensor]],
                  calibration: Any, *, dynamic_batch: bool = True, **build_options: Any) -> SpiNNakerModel:
    """Compile a torch module for SpiNNaker; returns a :class:`SpiNNakerModel` that takes and
    returns torch tensors.

    Parameters
    ----------
    model : torch.nn.Module
        float32 module; exported in eval mode (and left in the mode it was in).
    example_inputs : torch.Tensor or sequence of them
        Example positional inputs of ``model.forward`` (shapes and dtypes matter, batch first).
    calibration : array, tensor, list of them (one per input), or iterable of batches
        Representative inputs (e.g. a ``DataLoader`` of the training set, whose labels are
        not used) that set the int16 scales; see :func:`tvm_spinn.build`.
    dynamic_batch : bool
        Accept any batch size (default) or only the example's.
    build_options
        Passed to :func:`tvm_spinn.build` (``board``, ``strict``, ``headroom``, ...).

    Raises
    ------
    UnsupportedError, CalibrationError, ResourceError
        As :func:`tvm_spinn.from_torch` and :func:`tvm_spinn.build` do.
    """
    examples = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    if isinstance(calibration, torch.Tensor):
        calibration = calibration.detach().cpu().numpy()
    elif isinstance(calibration, (list, tuple)):
        calibration = [c.detach().cpu().numpy() if isinstance(c, torch.Tensor) else c for c in calibration]
    mod = from_torch(model, examples, dynamic_batch=dynamic_batch)
    return SpiNNakerModel(build(mod, calibration=calibration, **build_options), examples, dynamic_batch)
