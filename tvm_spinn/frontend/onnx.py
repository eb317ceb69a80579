"""Import an ONNX model into a Relax IRModule (TVM's ONNX importer)."""
from __future__ import annotations

import os
from typing import Dict, Optional, Sequence, Union

import tvm

from ..errors import ModelFileError, UnsupportedError


def _load(model) -> "onnx.ModelProto":  # noqa: F821
    """The ModelProto of ``model`` (a ModelProto, a path or serialized bytes)."""
    import onnx

    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, (bytes, bytearray)):
        what, load = "these bytes", lambda: onnx.load_model_from_string(bytes(model))
    elif isinstance(model, (str, os.PathLike)):
        if not os.path.isfile(model):
            raise ModelFileError(f"ONNX model {os.fspath(model)!r}: no such file")
        what, load = repr(os.fspath(model)), lambda: onnx.load(os.fspath(model))
    else:
        raise TypeError(f"from_onnx takes an onnx.ModelProto, a path or bytes, not {type(model).__name__}")
    try:
        proto = load()
    except Exception as exc:  # protobuf's DecodeError and friends: not an ONNX file
        raise ModelFileError(f"ONNX model {what} cannot be read ({type(exc).__name__}: "
                             f"{str(exc).strip() or 'not a serialized ModelProto'}); is it an .onnx file?") from exc
    if not proto.graph.node:
        raise ModelFileError(f"ONNX model {what} has no graph nodes; is it an .onnx file?")
    return proto


def from_onnx(model: Union["onnx.ModelProto", str, os.PathLike, bytes],  # noqa: F821
              shape_dict: Optional[Dict[str, Sequence[Union[int, str]]]] = None,
              opset: Optional[int] = None) -> tvm.IRModule:
    """Import an ONNX model as a Relax IRModule, ready for :func:`tvm_spinn.build`.

    Parameters
    ----------
    model : onnx.ModelProto, path of an .onnx file, or its bytes
    shape_dict : {input name: shape}, optional
        Input shapes overriding the model's; a ``str`` dimension is symbolic. By default the
        model's own: a dimension the model names (``dim_param``, e.g. from
        ``torch.onnx.export(..., dynamic_axes={"x": {0: "batch"}})``) stays symbolic, so
        the compiled module takes any batch size; a fixed one is baked in.
    opset : int, optional
        Override the opset the model declares.

    Returns
    -------
    mod : tvm.IRModule
        ``main`` takes the graph inputs (float32 unless the model says otherwise) in
        order; initializers (weights) are constants in the module.

    Raises
    ------
    ModelFileError
        No such file, or a file that is not an ONNX model.
    UnsupportedError
        TVM's ONNX importer cannot import the model (an op it does not know, named).
    ImportError
        The ``onnx`` package is missing (it is a dependency of tvm_spinn: reinstall).
    """
    proto = _load(model)
    _check_shape_dict(proto, shape_dict)
    from tvm.relax.frontend.onnx import from_onnx as tvm_from_onnx

    try:
        return tvm_from_onnx(proto, shape_dict=shape_dict, opset=opset)
    except Exception as exc:  # TVM's importer: an op it does not know, or a form it mis-handles
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsupportedError(
            f"TVM {tvm.__version__}'s ONNX importer cannot import this model: {first}; replace the op it names, "
            "or run that part of the model outside the exported graph"
            + (" (or check shape_dict: shapes the model was not made for fail here)" if shape_dict else "")) from exc


def _check_shape_dict(proto, shape_dict) -> None:
    """ValueError for a shape_dict entry that names no graph input or has another rank than
    it (TVM's importer would ignore the first and fail deep inside on the second)."""
    if not shape_dict:
        return
    initializers = {t.name for t in proto.graph.initializer}
    ranks = {i.name: len(i.type.tensor_type.shape.dim) for i in proto.graph.input if i.name not in initializers}
    for name, shape in shape_dict.items():
        if name not in ranks:
            raise ValueError(f"shape_dict names {name!r}, which is not an input of the model; its inputs: "
                             f"{', '.join(repr(n) for n in ranks)}")
        if ranks[name] and len(shape) != ranks[name]:
            raise ValueError(f"shape_dict[{name!r}] = {list(shape)} has {len(shape)} dimensions, the model's input "
                             f"{name!r} has {ranks[name]}")
