"""Import a PyTorch model into a Relax IRModule (torch.export + TVM's importer)."""
from __future__ import annotations

import warnings
from typing import Sequence, Union

import torch
import tvm
from torch.export import Dim
from tvm.relax.frontend.torch import from_exported_program

Inputs = Union[torch.Tensor, Sequence[torch.Tensor]]


def _positive_select_indices(exported: "torch.export.ExportedProgram") -> None:
    """Rewrite ``aten.select(x, dim, -k)`` as ``select(x, dim, size - k)``: TVM 0.27's importer
    turns a negative select index into an out-of-bounds ``take`` (``x[:, -1]`` gives wrong
    numbers, a GRU's last state garbage). Raises UnsupportedError for a negative index on a
    dimension whose size is symbolic (the batch)."""
    from ..errors import UnsupportedError

    changed = False
    for node in exported.graph.nodes:
        if node.op != "call_function" or node.target is not torch.ops.aten.select.int:
            continue
        src, dim, index = node.args[:3]
        if not isinstance(index, int) or index >= 0:
            continue
        size = src.meta["val"].shape[dim]
        if not isinstance(size, int):
            raise UnsupportedError(
                f"{node.name}: selecting index {index} along dimension {dim}, whose size is symbolic (the "
                "batch); index from the start instead, or export with dynamic_batch=False")
        node.args = (src, dim, index + size) + tuple(node.args[3:])
        changed = True
    if changed:
        exported.graph_module.recompile()


def from_torch(
    model: torch.nn.Module, example_inputs: Inputs, *, dynamic_batch: bool = True
) -> tvm.IRModule:
    """Export ``model`` with ``torch.export`` and import it as a Relax IRModule.

    Parameters
    ----------
    model : torch.nn.Module
        The model; it is put in eval mode (``model.eval()``) before export.
    example_inputs : torch.Tensor or sequence of torch.Tensor
        Example positional inputs of ``model.forward``. Only their shapes and
        dtypes matter.
    dynamic_batch : bool
        If True (default), axis 0 of every input is one symbolic ``batch``
        dimension, so the compiled module accepts any batch size. torch.export
        specialises a dimension whose example size is 1, so an example batch
        of 1 is repeated to 2 for the export (the module still accepts 1).
        If False, the example shapes are baked in.

    Returns
    -------
    mod : tvm.IRModule
        ``main`` takes the inputs in order; the weights are constants in the
        module (``keep_params_as_input=False``), ready for
        :func:`tvm_spinn.partition.partition_for_spinnaker`. A model with one
        output returns a tensor (not a 1-tuple); several outputs give a tuple.

    Examples
    --------
    ::

        import torch, tvm_spinn
        model = torch.nn.Sequential(torch.nn.Linear(784, 300), torch.nn.ReLU(),
                                    torch.nn.Linear(300, 10), torch.nn.Softmax(-1))
        mod = tvm_spinn.frontend.from_torch(model, torch.randn(8, 784))
        mod.show()   # main(x: R.Tensor((batch, 784), "float32")) -> ...
    """
    from ..errors import UnsupportedError

    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    args = tuple(example_inputs)
    others = sorted({str(t.dtype).replace("torch.", "") for t in list(model.parameters()) + list(model.buffers())
                     if t.is_floating_point() and t.dtype != torch.float32})

    dynamic_shapes = None
    if dynamic_batch:
        batch = Dim("batch")
        # 0-d tensors have no batch axis; everything else shares one batch Dim.
        dynamic_shapes = tuple(
            {0: batch} if isinstance(a, torch.Tensor) and a.ndim >= 1 else None for a in args
        )
        # A size-1 example batch would be specialised to the constant 1.
        args = tuple(
            torch.cat([a, a]) if isinstance(a, torch.Tensor) and a.ndim >= 1 and a.shape[0] == 1
            else a
            for a in args
        )
    with warnings.catch_warnings():  # torch 2.13's own deprecation inside torch.export, not the user's
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
        exported = torch.export.export(model.eval(), args, dynamic_shapes=dynamic_shapes)
    _positive_select_indices(exported)
    # Defaults kept on purpose: run_ep_decomposition=True (False mis-imports
    # eval-mode BatchNorm), keep_params_as_input=False (weights as constants).
    try:
        return from_exported_program(exported, unwrap_unit_return_tuple=True)
    except Exception as exc:  # TVM's importer: an op it does not know, or a form it mis-handles
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = (f"the model has {', '.join(others)} parameters: model.float() with float32 examples gives a "
                "model it imports (the board computes int16 from float32)" if others else
                "replace the op it names (e.g. AdaptiveMaxPool by MaxPool with the input's size) or run that part "
                "of the model outside the exported module")
        raise UnsupportedError(f"TVM {tvm.__version__}'s PyTorch importer cannot import this model: {first}; "
                               f"{hint}") from exc
