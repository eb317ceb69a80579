"""Frontend, dense partitioning and layer extraction (fast, no codegen needed)."""
import numpy as np
import pytest
import torch
import tvm
from tvm import relax, tirx

from tvm_spinn.errors import UnsupportedError
from tvm_spinn.frontend import from_torch
from tvm_spinn.graph.extract import extract_graph
from tvm_spinn.partition import offloaded_functions, partition_for_spinnaker, pattern_names

nn = torch.nn


def extract_layers(func):
    """The dense layers of an offloaded function: the ops of its operator graph."""
    return extract_graph(func).ops


def function_signature(func):
    """(in_features, out_features) of an offloaded function, from its operator graph."""
    graph = extract_graph(func)
    return int(np.prod(graph.input_shapes[0])), int(np.prod(graph.shapes()[graph.outputs[0]]))


def _partition(model, *inputs, **kw):
    torch.manual_seed(0)
    return partition_for_spinnaker(from_torch(model, inputs, **kw))


def _host_ops(mod) -> list[str]:
    """Names of the Relax ops left in main (run on the host CPU)."""
    names = []
    for block in mod["main"].body.blocks:
        for b in block.bindings:
            v = b.value
            if isinstance(v, relax.Call) and isinstance(v.op, tvm.ir.Op):
                names.append(v.op.name)
    return names


def _composites(func) -> list[str]:
    return [
        str(b.value.attrs["Composite"])
        for block in func.body.blocks
        for b in block.bindings
        if isinstance(b.value, relax.Function)
    ]


def _run_chain(layers, x: np.ndarray) -> np.ndarray:
    for layer in layers:
        x = layer.forward(x)
    return x


def _offloaded_in_call_order(mod):
    """Offloaded functions in the order main calls them."""
    funcs = offloaded_functions(mod)
    order = []
    for block in mod["main"].body.blocks:
        for b in block.bindings:
            v = b.value
            if isinstance(v, relax.Call) and isinstance(v.op, relax.GlobalVar):
                if v.op.name_hint in funcs:
                    order.append(funcs[v.op.name_hint])
    return order


class MLP64(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(64, 128), nn.Linear(128, 128), nn.Linear(128, 10)

    def forward(self, x):
        return torch.softmax(self.fc3(torch.relu(self.fc2(self.fc1(x)))), dim=-1)


class BoardFilling(nn.Module):
    """224 -> 50 relu -> 50 softmax -> 300 tanh -> 50 sigmoid -> 25 -> 17 softmax."""

    def __init__(self):
        super().__init__()
        self.l = nn.ModuleList(
            [nn.Linear(224, 50), nn.Linear(50, 50), nn.Linear(50, 300),
             nn.Linear(300, 50), nn.Linear(50, 25), nn.Linear(25, 17)]
        )

    def forward(self, x):
        x = torch.relu(self.l[0](x))
        x = torch.softmax(self.l[1](x), -1)
        x = torch.tanh(self.l[2](x))
        x = torch.sigmoid(self.l[3](x))
        x = self.l[5](self.l[4](x))
        return torch.softmax(x, -1)


def test_patterns_registered_once():
    import importlib

    import tvm_spinn.partition.patterns as p

    before = pattern_names()
    importlib.reload(p)
    assert pattern_names() == before
    assert "spinnaker.dense" in before and "spinnaker.dense_bias_relu" in before
    # Most specific first (highest priority); the dense patterns come first, as
    # one block, and are the only ones used by default (convolutions=False).
    dense = [n for n in before if n.startswith("spinnaker.dense")]
    assert before[:len(dense)] == dense and len(dense) == 12  # (bias or not) x 6 activations
    assert dense[0].startswith("spinnaker.dense_bias_") and dense[-1] == "spinnaker.dense"
    # Tensor patterns (convolutions=True); the residual add patterns last.
    assert {"spinnaker.conv2d", "spinnaker.conv1d_pad_bias_relu", "spinnaker.max_pool2d",
            "spinnaker.avg_pool2d", "spinnaker.max_pool1d", "spinnaker.avg_pool1d",
            "spinnaker.flatten", "spinnaker.add", "spinnaker.add_relu"} <= set(before)
    assert before[-1] == "spinnaker.add"


def test_from_torch_batch_of_one_is_symbolic():
    mod = from_torch(nn.Linear(4, 3), torch.randn(1, 4))
    assert isinstance(mod["main"].params[0].ty.shape.values[0], tirx.Var)
    static = from_torch(nn.Linear(4, 3), torch.randn(1, 4), dynamic_batch=False)
    assert [int(d) for d in static["main"].params[0].ty.shape.values] == [1, 4]
    # One output: a tensor, not a 1-tuple.
    assert isinstance(mod["main"].ret_ty, relax.TensorType)


def test_mlp64_one_function_three_layers():
    model = MLP64().eval()
    mod = _partition(model, torch.randn(4, 64))
    funcs = offloaded_functions(mod)
    assert len(funcs) == 1
    (func,) = funcs.values()
    assert func.attrs["Codegen"] == "spinnaker" and "global_symbol" in func.attrs
    assert _composites(func) == ["spinnaker.dense_bias", "spinnaker.dense_bias_relu",
                                 "spinnaker.dense_bias"]
    assert _host_ops(mod) == ["relax.nn.softmax"]
    layers = extract_layers(func)
    assert [l.activation for l in layers] == ["none", "relu", "none"]
    # named by the torch modules they were imported from
    assert [l.name for l in layers] == ["fc1 (Linear 64->128)", "fc2 (Linear 128->128, relu)",
                                        "fc3 (Linear 128->10)"]
    for layer, lin in zip(layers, [model.fc1, model.fc2, model.fc3]):
        np.testing.assert_array_equal(layer.weight, lin.weight.detach().numpy())
        np.testing.assert_array_equal(layer.bias, lin.bias.detach().numpy())
    assert function_signature(func) == (64, 10)
    # Symbolic batch dim on the offloaded function.
    assert isinstance(func.params[0].ty.shape.values[0], tirx.Var)
    x = torch.randn(7, 64)
    logits = model.fc3(torch.relu(model.fc2(model.fc1(x)))).detach().numpy()
    np.testing.assert_allclose(_run_chain(layers, x.numpy()), logits, rtol=1e-5, atol=1e-5)


def test_board_filling_mlp_split_by_softmax():
    model = BoardFilling().eval()
    mod = _partition(model, torch.randn(3, 224))
    funcs = _offloaded_in_call_order(mod)
    assert len(funcs) == 2 and len(offloaded_functions(mod)) == 2
    first, second = (extract_layers(f) for f in funcs)
    assert [(l.in_features, l.out_features, l.activation) for l in first] == [
        (224, 50, "relu"), (50, 50, "none")]
    assert [(l.in_features, l.out_features, l.activation) for l in second] == [
        (50, 300, "tanh"), (300, 50, "sigmoid"), (50, 25, "none"), (25, 17, "none")]
    assert _host_ops(mod) == ["relax.nn.softmax", "relax.nn.softmax"]
    assert [function_signature(f) for f in funcs] == [(224, 50), (50, 17)]
    for layer, lin in zip(first + second, model.l):
        np.testing.assert_array_equal(layer.weight, lin.weight.detach().numpy())
        np.testing.assert_array_equal(layer.bias, lin.bias.detach().numpy())
    # The whole model from the two chains plus host softmaxes.
    x = torch.randn(5, 224)
    h = _run_chain(first, x.numpy())
    h = torch.softmax(torch.from_numpy(h), -1).numpy()
    y = torch.softmax(torch.from_numpy(_run_chain(second, h)), -1).numpy()
    np.testing.assert_allclose(y, model(x).detach().numpy(), rtol=1e-5, atol=1e-6)


def test_linear_without_bias_sigmoid_tanh():
    model = nn.Sequential(nn.Linear(8, 6, bias=False), nn.Sigmoid(),
                          nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 4, bias=False)).eval()
    mod = _partition(model, torch.randn(2, 8))
    (func,) = offloaded_functions(mod).values()
    assert _composites(func) == ["spinnaker.dense_sigmoid", "spinnaker.dense_bias_tanh",
                                 "spinnaker.dense"]
    layers = extract_layers(func)
    assert [l.activation for l in layers] == ["sigmoid", "tanh", "none"]
    assert layers[0].bias is None and layers[2].bias is None
    np.testing.assert_array_equal(layers[1].bias, model[2].bias.detach().numpy())
    assert _host_ops(mod) == []
    x = torch.randn(9, 8)
    np.testing.assert_allclose(_run_chain(layers, x.numpy()), model(x).detach().numpy(),
                               rtol=1e-5, atol=1e-6)


class MatmulParam(nn.Module):
    """x @ W with a (K, N) parameter, bias added on the left: matmul(x, W), add(b, mm)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(8, 5))
        self.b = nn.Parameter(torch.randn(5))
        self.w2 = nn.Parameter(torch.randn(5, 3))
        self.b2 = nn.Parameter(torch.randn(3))

    def forward(self, x):
        h = torch.relu(self.b + x @ self.w)
        return h.mm(self.w2) + self.b2.reshape(1, 3)


def test_matmul_with_constant_kn_weight():
    model = MatmulParam().eval()
    mod = _partition(model, torch.randn(2, 8))
    (func,) = offloaded_functions(mod).values()
    # add(b, mm) and add(mm, reshape(b, (1, N))) are both biases.
    assert _composites(func) == ["spinnaker.dense_bias_relu", "spinnaker.dense_bias"]
    layers = extract_layers(func)
    np.testing.assert_array_equal(layers[0].weight, model.w.detach().numpy().T)
    np.testing.assert_array_equal(layers[1].weight, model.w2.detach().numpy().T)
    np.testing.assert_array_equal(layers[1].bias, model.b2.detach().numpy())
    x = torch.randn(4, 8)
    np.testing.assert_allclose(_run_chain(layers, x.numpy()), model(x).detach().numpy(),
                               rtol=1e-5, atol=1e-5)


class TwoInputs(nn.Module):
    def forward(self, x, w):
        return torch.relu(x @ w)


def test_non_constant_weight_stays_on_cpu():
    x, w = torch.randn(2, 8), torch.randn(8, 3)
    ep = torch.export.export(TwoInputs(), (x, w),
                             dynamic_shapes=({0: torch.export.Dim("batch")}, None))
    from tvm.relax.frontend.torch import from_exported_program

    mod = partition_for_spinnaker(from_exported_program(ep))
    assert offloaded_functions(mod) == {}
    assert _host_ops(mod) == ["relax.matmul", "relax.nn.relu"]


def test_float16_stays_on_cpu():
    # TVM 0.27's importer fails on an fp16 Linear *with* bias (addmm adds an
    # fp16 bias to a float32 matmul); without bias it imports as
    # matmul(fp16, fp16, out_dtype="float32"), which must stay on the host.
    model = nn.Sequential(nn.Linear(8, 4, bias=False), nn.ReLU()).half().eval()
    mod = _partition(model, torch.randn(2, 8).half())
    assert offloaded_functions(mod) == {}
    assert "relax.matmul" in _host_ops(mod)


def test_float16_dense_with_bias_built_in_relax_stays_on_cpu():
    bb = relax.BlockBuilder()
    n = tirx.Var("n", "int64")
    x = relax.Var("x", relax.TensorType([n, 8], "float16"))
    with bb.function("main", [x]):
        with bb.dataflow():
            wt = bb.emit(relax.op.permute_dims(relax.const(np.ones((4, 8), "float16"))))
            mm = bb.emit(relax.op.matmul(x, wt))
            out = bb.emit_output(relax.op.add(mm, relax.const(np.ones(4, "float16"))))
        bb.emit_func_output(out)
    mod = partition_for_spinnaker(bb.get())
    assert offloaded_functions(mod) == {}


def test_unsupported_activation_stays_on_cpu():
    model = nn.Sequential(nn.Linear(8, 6), nn.GELU(), nn.Linear(6, 4)).eval()
    mod = _partition(model, torch.randn(2, 8))
    funcs = _offloaded_in_call_order(mod)
    assert len(funcs) == 2  # gelu on the host splits the chain
    assert [_composites(f) for f in funcs] == [["spinnaker.dense_bias"]] * 2
    assert _host_ops(mod) == ["relax.nn.gelu"]


def test_intermediate_used_outside_is_not_fused():
    class Leak(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 6)

        def forward(self, x):
            h = self.fc(x)
            return torch.relu(h), h

    mod = _partition(Leak().eval(), torch.randn(2, 8))
    (func,) = offloaded_functions(mod).values()
    assert _composites(func) == ["spinnaker.dense_bias"]
    assert _host_ops(mod) == ["relax.nn.relu"]


def test_residual_add_is_not_a_bias():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 8, bias=False)

        def forward(self, x):
            return torch.relu(self.fc(x) + x)

    mod = _partition(Residual().eval(), torch.randn(2, 8))
    (func,) = offloaded_functions(mod).values()
    assert _composites(func) == ["spinnaker.dense"]
    assert _host_ops(mod) == ["relax.add", "relax.nn.relu"]


def test_branching_subgraph_is_one_graph_with_two_outputs():
    class Diamond(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(8, 4), nn.Linear(4, 3), nn.Linear(4, 3)

        def forward(self, x):
            h = torch.relu(self.a(x))
            return self.b(h), self.c(h)

    mod = _partition(Diamond().eval(), torch.randn(2, 8))
    # MergeCompositeFunctions puts all three in one function with two outputs.
    (func,) = offloaded_functions(mod).values()
    assert len(_composites(func)) == 3
    # The operator graph holds both results (the board runs it as one program).
    graph = extract_graph(func)
    assert [op.inputs for op in graph.ops] == [(-1,), (0,), (0,)] and graph.outputs == [1, 2]
