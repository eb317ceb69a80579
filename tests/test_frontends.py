"""Frontends and ways in: ONNX, an ExportedProgram, the torch-facing compile_torch, and
calibration given as batches (a DataLoader, a generator)."""
import io
import warnings

import numpy as np
import pytest
import torch
import tvm
from tvm import relax

import tvm_spinn

L = torch.nn.Linear


def _mlp(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(L(12, 24), torch.nn.ReLU(), L(24, 5)).eval()


def _llvm(mod: tvm.IRModule, x: np.ndarray) -> np.ndarray:
    vm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


def _spinn(ex, x: np.ndarray):
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return vm, vm["main"](tvm.runtime.tensor(x)).numpy()


def _onnx_bytes(model: torch.nn.Module, x: torch.Tensor) -> bytes:
    f = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated; the dynamo one needs onnxscript
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (x,), f, dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    return f.getvalue()


def _assert_on_board_and_exact(vm, x: np.ndarray, y: np.ndarray) -> None:
    """y is what the board computed: the integer reference of the program, dequantised."""
    program = tvm_spinn.executors(vm)[0].program
    np.testing.assert_array_equal(np.round(y / program.output_scale).astype(np.int16),
                                  tvm_spinn.integer_reference(program, x))


def test_from_onnx_matches_llvm_and_torch(tmp_path):
    model = _mlp()
    x = torch.randn(40, 12, generator=torch.Generator().manual_seed(1))
    path = tmp_path / "mlp.onnx"
    path.write_bytes(_onnx_bytes(model, x[:2]))
    mod = tvm_spinn.from_onnx(path)
    x_np = x.numpy()
    y_llvm = _llvm(mod, x_np)
    y_torch = model(x).detach().numpy()
    np.testing.assert_allclose(y_llvm, y_torch, atol=1e-5)
    vm, y = _spinn(tvm_spinn.build(mod, calibration=x_np), x_np[:9])  # any batch: dim_param "batch"
    _assert_on_board_and_exact(vm, x_np[:9], y)
    span = y_llvm.max() - y_llvm.min()
    assert np.abs(y - y_llvm[:9]).max() < 0.01 * span


def test_from_onnx_errors_name_the_file_and_the_op(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    with pytest.raises(tvm_spinn.ModelFileError, match="no such file"):
        tvm_spinn.from_onnx(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not a protobuf at all" * 10)
    with pytest.raises(tvm_spinn.ModelFileError, match="junk.onnx"):
        tvm_spinn.from_onnx(junk)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    graph = helper.make_graph([helper.make_node("NoSuchOpAnywhere", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(tvm_spinn.UnsupportedError, match="ONNX importer.*NoSuchOpAnywhere"):
        tvm_spinn.from_onnx(model)
    assert isinstance(model, onnx.ModelProto)
    # shape_dict: a name that is no input (TVM's importer ignores it) or another rank is refused
    with pytest.raises(ValueError, match="shape_dict names 'input', which is not an input of the model; its "
                                         "inputs: 'x'"):
        tvm_spinn.from_onnx(model, shape_dict={"input": [2, 4]})
    with pytest.raises(ValueError, match=r"shape_dict\['x'\] = \[4\] has 1 dimensions, the model's input 'x' has 2"):
        tvm_spinn.from_onnx(model, shape_dict={"x": [4]})


def test_from_torch_leaves_the_mode_alone_and_takes_an_exported_program():
    model = _mlp(2)
    model.train()
    model[2].eval()  # a part the user froze on purpose
    x = torch.randn(16, 12, generator=torch.Generator().manual_seed(3))
    mod = tvm_spinn.from_torch(model, x[:2])
    assert model.training and model[0].training and not model[2].training
    # The same model exported by the user (dynamic batch) imports to the same function.
    exported = torch.export.export(model.eval(), (x[:2],), dynamic_shapes=({0: torch.export.Dim("batch")},))
    mod_ep = tvm_spinn.from_torch(exported)
    y_torch = model(x).detach().numpy()
    np.testing.assert_allclose(_llvm(mod_ep, x.numpy()), y_torch, atol=1e-5)
    np.testing.assert_allclose(_llvm(mod, x.numpy()), y_torch, atol=1e-5)
    with pytest.raises(TypeError, match="example inputs"):
        tvm_spinn.from_torch(model)


def test_compile_torch_takes_and_returns_torch_tensors():
    model = _mlp(4)
    x = torch.randn(48, 12, generator=torch.Generator().manual_seed(5))
    labels = torch.zeros(48, dtype=torch.long)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, labels), batch_size=16)
    net = tvm_spinn.compile_torch(model, x[:2], calibration=loader)
    y = net(x[:7])
    assert isinstance(y, torch.Tensor) and y.shape == (7, 5) and y.dtype == torch.float32
    _assert_on_board_and_exact(net.vm, x[:7].numpy(), y.numpy())
    y_torch = model(x[:7]).detach()
    assert float((y - y_torch).abs().max()) < 0.01 * float(y_torch.max() - y_torch.min())
    assert net.statistics().samples == 7
    with pytest.raises(tvm_spinn.InputError, match=r"input 0: expected a tensor of shape \(batch, 12\)"):
        net(torch.randn(3, 11))
    # float64 (a tensor from numpy's default dtype) is converted, as a VM's input is
    assert torch.equal(net(x[:7].double()), y)
    # the reports and plots take the model as they take its VM (was: "nothing offloaded")
    assert tvm_spinn.report.model_summary(net) == tvm_spinn.report.model_summary(net.vm)
    assert tvm_spinn.statistics(net).samples == 7 and len(tvm_spinn.executors(net)) == 1


def test_calibration_from_batches_equals_one_array():
    model = _mlp(6)
    x = np.random.default_rng(7).normal(size=(60, 12)).astype(np.float32)
    mod = tvm_spinn.from_torch(model, torch.from_numpy(x[:2]))
    _, y_array = _spinn(tvm_spinn.build(mod, calibration=x), x)
    # A generator of (input, label) batches of uneven sizes: the labels are not used.
    batches = ((torch.from_numpy(x[i:i + 25]), np.zeros(len(x[i:i + 25]))) for i in range(0, 60, 25))
    _, y_batches = _spinn(tvm_spinn.build(mod, calibration=batches), x)
    np.testing.assert_array_equal(y_batches, y_array)  # the same scales, so the same integers
    # The TVM-native spelling reads an iterable too.
    pipeline = relax.get_pipeline("spinnaker", calibration=iter([x[:30], x[30:]]))
    _, y_pipeline = _spinn(tvm.compile(mod, target="spinnaker", relax_pipeline=pipeline), x)
    np.testing.assert_array_equal(y_pipeline, y_array)
    with pytest.raises(tvm_spinn.CalibrationError, match="yielded no batches"):
        tvm_spinn.build(mod, calibration=(b for b in []))


def test_from_torch_exports_varargs_and_says_when_torch_export_cannot():
    """A forward(*xs) gets one batch dimension per tensor (was: torch's "inputs has 1 elements,
    but dynamic_shapes has 3"); what torch.export refuses is an UnsupportedError saying so."""
    class Sum(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 3)

        def forward(self, *xs):
            return self.fc(sum(xs))

    class DataDependent(torch.nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    mod = tvm_spinn.from_torch(Sum().eval(), tuple(torch.randn(2, 4) for _ in range(3)))
    shapes = [p.ty.shape.values for p in mod["main"].params]
    assert len(shapes) == 3 and len({str(s[0]) for s in shapes}) == 1  # one batch, shared
    assert not isinstance(shapes[0][0], tvm.tirx.IntImm) and all(int(s[1]) == 4 for s in shapes)
    with pytest.raises(tvm_spinn.UnsupportedError, match="torch.export cannot export this model: Could not guard"):
        tvm_spinn.from_torch(DataDependent(), torch.randn(2, 4))
