"""Import a PyTorch model into a Relax IRModule (torch.export + TVM's importer)."""
from __future__ import annotations

import contextlib
import copy
import inspect
import warnings
from typing import Optional, Sequence, Union

import torch
import tvm
from torch.export import Dim
from tvm.relax.frontend.torch.exported_program_translator import ExportedProgramImporter

from ..errors import UnsupportedError
from .origin import origin_span, with_span

Inputs = Union[torch.Tensor, Sequence[torch.Tensor]]


def _dim_size(node, dim: int, index, where: str) -> int:
    """The static size of ``node``'s dimension ``dim``; UnsupportedError if it is symbolic."""
    size = node.meta["val"].shape[dim]
    if not isinstance(size, int):
        raise UnsupportedError(
            f"{where}: index {index} counts from the end of dimension {dim}, whose size is symbolic (the "
            "batch); index from the start instead, or export with dynamic_batch=False")
    return size


def _index_constant(exported, node):
    """(name in exported.constants, tensor) of the constant an index operand reads, or None."""
    while node.op == "call_function" and node.target is torch.ops.aten.lift_fresh_copy.default:
        node = node.args[0]
    if node.op != "placeholder":
        return None
    for spec in exported.graph_signature.input_specs:
        if spec.arg.name == node.name and spec.target in exported.constants:
            return spec.target, exported.constants[spec.target]
    return None


def _positive_indices(exported: "torch.export.ExportedProgram", check_only: bool = False) -> bool:
    """Make negative indices positive before TVM 0.27's importer, which takes them as
    out-of-bounds positions (wrong numbers, a GRU's last state garbage): the index of
    ``aten.select(x, dim, -k)`` (``x[:, -1]``) and constant index tensors of
    ``aten.index.Tensor`` (``x[:, [-1, 0]]``). Raises UnsupportedError for a negative index on a
    dimension whose size is symbolic (the batch), and for a constant index tensor that other
    ops read too (rewriting it would change them). Returns whether there was one to make
    positive; with ``check_only``, changes nothing."""
    changed = False
    for node in exported.graph.nodes:
        if node.op != "call_function":
            continue
        if node.target is torch.ops.aten.select.int:
            src, dim, index = node.args[:3]
            if isinstance(index, int) and index < 0:
                if check_only:
                    return True
                node.args = (src, dim, index + _dim_size(src, dim, index, node.name)) + tuple(node.args[3:])
                changed = True
        elif node.target is torch.ops.aten.index.Tensor:
            src, indices = node.args[:2]
            for dim, operand in enumerate(indices):
                found = None if operand is None else _index_constant(exported, operand)
                if found is None or not bool((found[1] < 0).any()):
                    continue
                if check_only:
                    return True
                if len(operand.users) != 1:
                    raise UnsupportedError(f"{node.name}: a negative constant index that other ops also read")
                size = _dim_size(src, dim, int(found[1].min()), node.name)
                exported.constants[found[0]] = torch.where(found[1] < 0, found[1] + size, found[1])
                changed = True
    if changed:
        exported.graph_module.recompile()
    return changed


class _SpannedBuilder:
    """The importer's block builder, giving every call it emits the span of one torch module."""

    def __init__(self, builder, span):
        self._builder, self._span = builder, span

    def __getattr__(self, name):
        return getattr(self._builder, name)

    def emit(self, expr, name_hint: str = ""):
        return self._builder.emit(with_span(expr, self._span) if expr.span is None else expr, name_hint)


class _Importer(ExportedProgramImporter):
    """TVM's importer, with the module path of each torch node on the calls made for it
    (frontend.origin): TVM 0.27 keeps no names or spans."""

    def _translate_fx_graph(self, graph_module, nodes, inputs_vars, custom_ops=None):
        self.convert_map = {name: self._spanned(convert) for name, convert in self.convert_map.items()}
        return super()._translate_fx_graph(graph_module, nodes, inputs_vars, custom_ops)

    def _spanned(self, convert):
        def run(node, *rest):
            stack = node.meta.get("nn_module_stack") if hasattr(node, "meta") else None
            path, kind = list(stack.values())[-1] if stack else ("", "")
            span = origin_span(path, str(kind).rpartition(".")[2])
            if span is None or isinstance(self.block_builder, _SpannedBuilder):
                return convert(node, *rest)
            builder, self.block_builder = self.block_builder, _SpannedBuilder(self.block_builder, span)
            try:
                return convert(node, *rest)
            finally:
                self.block_builder = builder

        return run


def from_exported_program(exported: "torch.export.ExportedProgram") -> tvm.IRModule:
    """TVM's ``from_exported_program`` (as its defaults: decomposition on, weights as
    constants; unlike them, a single result unwrapped), each call spanned with its torch
    module (frontend.origin)."""
    # Defaults kept on purpose: run_ep_decomposition=True (False mis-imports
    # eval-mode BatchNorm), keep_params_as_input=False (weights as constants).
    with _quiet_export():  # the decomposition re-runs torch.export's code
        decomposed = exported.run_decompositions()
    return _Importer().from_exported_program(decomposed, False, True, False, None)


def from_torch(
    model: Union[torch.nn.Module, "torch.export.ExportedProgram"], example_inputs: Optional[Inputs] = None, *,
    dynamic_batch: bool = True
) -> tvm.IRModule:
    """Export ``model`` with ``torch.export`` and import it as a Relax IRModule.

    Parameters
    ----------
    model : torch.nn.Module or torch.export.ExportedProgram
        The model. A module is exported in eval mode (dropout off, BatchNorm's running
        statistics) and then put back in the mode it was in. An ``ExportedProgram``
        (``torch.export.export(...)`` or ``torch.export.load("model.pt2")``) is imported
        as it is: its shapes, dynamic or not, are those it was exported with.
    example_inputs : torch.Tensor or sequence of torch.Tensor
        Example positional inputs of ``model.forward``. Only their shapes and
        dtypes matter. Required for a module; not used for an ExportedProgram.
    dynamic_batch : bool
        If True (default), axis 0 of every input is one symbolic ``batch``
        dimension, so the compiled module accepts any batch size. torch.export
        specialises a dimension whose example size is 1, so an example batch
        of 1 is repeated to 2 for the export (the module still accepts 1).
        If False, the example shapes are baked in. Not used for an ExportedProgram.

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
    if isinstance(model, torch.export.ExportedProgram):
        exported = model
        # _positive_indices rewrites the graph: work on a copy, not the caller's program.
        exported = copy.deepcopy(exported) if _positive_indices(exported, check_only=True) else exported
        others = _other_float_dtypes(exported.state_dict.values())
    elif isinstance(model, torch.nn.Module):
        if example_inputs is None:
            raise TypeError("from_torch(model, example_inputs): a torch.nn.Module needs example inputs "
                            "(a tensor or a tuple of tensors, one per forward argument)")
        others = _other_float_dtypes(list(model.parameters()) + list(model.buffers()))
        exported = _export(model, example_inputs, dynamic_batch)
    else:
        raise TypeError(f"from_torch takes a torch.nn.Module or a torch.export.ExportedProgram, not "
                        f"{type(model).__name__}")
    _positive_indices(exported)
    try:
        return from_exported_program(exported)
    except Exception as exc:  # TVM's importer: an op it does not know, or a form it mis-handles
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = (f"the model has {', '.join(others)} parameters: model.float() with float32 examples gives a "
                "model it imports (the board computes int16 from float32)" if others else
                "replace the op it names (e.g. AdaptiveMaxPool by MaxPool with the input's size) or run that part "
                "of the model outside the exported module")
        raise UnsupportedError(f"TVM {tvm.__version__}'s PyTorch importer cannot import this model: {first}; "
                               f"{hint}") from exc


def _other_float_dtypes(tensors) -> list:
    """Floating dtypes other than float32 among ``tensors`` (names, sorted)."""
    return sorted({str(t.dtype).replace("torch.", "") for t in tensors
                   if t.is_floating_point() and t.dtype != torch.float32})


@contextlib.contextmanager
def _quiet_export():
    """Silence torch 2.13's own deprecation inside torch.export (raised by its code, not the
    user's), and only that one."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
        yield


def _export(model: torch.nn.Module, example_inputs: Inputs, dynamic_batch: bool) -> "torch.export.ExportedProgram":
    """torch.export of ``model`` in eval mode; ``model`` is left in the mode it was in."""
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    args = tuple(example_inputs)
    dynamic_shapes = None
    if dynamic_batch:
        dynamic_shapes = _batch_shapes(model, args, Dim("batch"))
        # A size-1 example batch would be specialised to the constant 1.
        args = tuple(
            torch.cat([a, a]) if isinstance(a, torch.Tensor) and a.ndim >= 1 and a.shape[0] == 1
            else a
            for a in args
        )
    # Remember each submodule's mode: a model may hold a frozen part in eval on purpose.
    modes = {m: m.training for m in model.modules()}
    try:
        with _quiet_export():
            return torch.export.export(model.eval(), args, dynamic_shapes=dynamic_shapes)
    except Exception as exc:  # torch.export's own limits: data-dependent control flow, arguments, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsupportedError(
            f"torch.export cannot export this model: {first}; check that example_inputs are forward's positional "
            "arguments, make the control flow independent of the data (or export it yourself and pass the "
            "ExportedProgram)" + ("; dynamic_batch=False exports the example shapes as they are"
                                  if dynamic_batch else "")) from exc
    finally:
        for m, training in modes.items():
            m.training = training


def _batch_shapes(model: torch.nn.Module, args: tuple, batch) -> Union[tuple, dict]:
    """torch.export's dynamic_shapes for ``args``: axis 0 of every tensor of at least one
    dimension is ``batch`` (0-d tensors have none), shaped as forward's signature binds the
    arguments (a ``*args`` parameter takes one tuple of them)."""
    def spec(a):
        return {0: batch} if isinstance(a, torch.Tensor) and a.ndim >= 1 else None

    try:
        signature = inspect.signature(model.forward)
        bound = signature.bind(*args).arguments
    except (TypeError, ValueError):  # no signature, or arguments it does not take: torch.export says so
        return tuple(spec(a) for a in args)
    return {name: tuple(spec(a) for a in value)
            if signature.parameters[name].kind is inspect.Parameter.VAR_POSITIONAL else spec(value)
            for name, value in bound.items()}
