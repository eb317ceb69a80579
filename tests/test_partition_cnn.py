"""Partitioning and extraction of convolutional networks (partition_for_spinnaker(convolutions=True))."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import tvm
from tvm import relax, tirx

from tvm_spinn.errors import UnsupportedError
from tvm_spinn.graph.extract import extract_graph, extract_network, forward_network, input_shape
from tvm_spinn.frontend import from_torch
from tvm_spinn.graph.ops import NETWORK_INPUT, Add, Conv2D, DenseLayer, Flatten, Pool2D
from tvm_spinn.partition import fold_batch_norm, offloaded_functions, partition_for_spinnaker

from tvm_spinn.zoo import BoardFillingCNN, Conv1DSmall, LeNet5, PoolNet1D, ResNet8, randomize_bn

nn = torch.nn


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------
def _host_ops(mod) -> list:
    return [b.value.op.name for block in mod["main"].body.blocks for b in block.bindings
            if isinstance(b.value, relax.Call) and isinstance(b.value.op, tvm.ir.Op)]


def _composites(func) -> list:
    return [str(b.value.attrs["Composite"]) for block in func.body.blocks for b in block.bindings
            if isinstance(b.value, relax.Function)]


def _partition(model, x, convolutions=True):
    torch.manual_seed(0)
    return partition_for_spinnaker(from_torch(model.eval(), x), convolutions=convolutions)


def _single(mod):
    funcs = offloaded_functions(mod)
    assert len(funcs) == 1, list(funcs)
    (func,) = funcs.values()
    relax.analysis.well_formed(mod)  # raises if not
    # One tensor input: the flatten shape is not passed in as a second parameter.
    assert len(func.params) == 1 and isinstance(func.params[0].ty, relax.TensorType)
    return func


def _check_numerics(model, ops, shape, n=5, tol=1e-4):
    torch.manual_seed(1)
    x = torch.randn(n, *shape)
    with torch.no_grad():
        ref = (model.logits(x) if hasattr(model, "logits") else model(x)).numpy()
    y = forward_network(ops, x.numpy())
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.reshape(ref.shape), ref, rtol=tol, atol=tol)


def _kinds(ops) -> list:
    names = []
    for op in ops:
        if isinstance(op, Pool2D):
            names.append(f"{op.kind}pool")
        else:
            names.append(type(op).__name__)
    return names


# ---------------------------------------------------------------------------
# The five reference models
# ---------------------------------------------------------------------------
def test_lenet5():
    torch.manual_seed(0)
    model = LeNet5().eval()
    mod = _partition(model, torch.randn(2, 1, 28, 28))
    func = _single(mod)
    assert _host_ops(mod) == []
    assert _composites(func) == [
        "spinnaker.conv2d_bias_relu", "spinnaker.max_pool2d", "spinnaker.conv2d_bias_relu",
        "spinnaker.max_pool2d", "spinnaker.flatten", "spinnaker.dense_bias_relu",
        "spinnaker.dense_bias_relu", "spinnaker.dense_bias"]
    assert input_shape(func) == (1, 28, 28)
    ops = extract_network(func)
    assert _kinds(ops) == ["Conv2D", "maxpool", "Conv2D", "maxpool", "Flatten",
                           "DenseLayer", "DenseLayer", "DenseLayer"]
    assert [op.inputs for op in ops] == [(NETWORK_INPUT,)] + [(i,) for i in range(7)]
    c1, p1, c2, p2 = ops[:4]
    assert c1.weight.shape == (6, 1, 5, 5) and c1.padding == (2, 2, 2, 2) and c1.stride == (1, 1)
    assert c1.activation == "relu" and c1.groups == 1 and c1.weight.dtype == np.float32
    np.testing.assert_array_equal(c1.weight, model.c1.weight.detach().numpy())
    np.testing.assert_array_equal(c1.bias, model.c1.bias.detach().numpy())
    assert (p1.kernel, p1.stride, p1.padding, p1.out_hw) == ((2, 2), (2, 2), (0, 0, 0, 0), (14, 14))
    assert c2.weight.shape == (16, 6, 5, 5) and c2.padding == (0, 0, 0, 0)
    assert p2.out_hw == (5, 5)
    assert [(l.in_features, l.out_features) for l in ops[5:]] == [(400, 120), (120, 84), (84, 10)]
    _check_numerics(model, ops, (1, 28, 28))


def test_resnet8_one_function_with_residuals_and_folded_bn():
    torch.manual_seed(0)
    model = randomize_bn(ResNet8()).eval()
    mod = _partition(model, torch.randn(2, 3, 32, 32))
    func = _single(mod)
    assert _host_ops(mod) == ["relax.nn.softmax"]  # no batch_norm left anywhere
    assert input_shape(func) == (3, 32, 32)
    ops = extract_network(func)
    assert _kinds(ops) == ["Conv2D", "Conv2D", "Conv2D", "Add",
                           "Conv2D", "Conv2D", "Conv2D", "Add",
                           "Conv2D", "Conv2D", "Conv2D", "Add",
                           "avgpool", "Flatten", "DenseLayer"]
    # Residual wiring: identity shortcut in stack 1, 1x1 strided conv shortcuts after.
    assert sorted(ops[3].inputs) == [0, 2] and ops[3].activation == "relu"
    assert ops[6].inputs == (3,) and ops[6].weight.shape == (32, 16, 1, 1) and ops[6].stride == (2, 2)
    assert sorted(ops[7].inputs) == [5, 6]
    assert sorted(ops[11].inputs) == [9, 10]
    # Keras "same" 3x3 stride 2 on an even size pads only bottom/right.
    assert ops[4].padding == (0, 0, 1, 1) and ops[4].stride == (2, 2)
    assert ops[1].padding == (1, 1, 1, 1)
    pool = ops[12]
    assert (pool.kernel, pool.stride, pool.out_hw, pool.count_include_pad) == ((8, 8), (8, 8), (1, 1), True)
    _check_numerics(model, ops, (3, 32, 32))


def test_conv1d_small():
    torch.manual_seed(0)
    model = Conv1DSmall().eval()
    mod = _partition(model, torch.randn(2, 4, 64))
    func = _single(mod)
    assert _host_ops(mod) == ["relax.nn.softmax"]
    assert input_shape(func) == (4, 1, 64)
    ops = extract_network(func)
    assert _kinds(ops) == ["Conv2D", "Conv2D", "Flatten", "DenseLayer"]
    c1, c2 = ops[:2]
    assert c1.weight.shape == (20, 4, 1, 3) and c1.padding == (0, 0, 0, 0) and c1.activation == "none"
    assert c2.weight.shape == (5, 20, 1, 3) and c2.stride == (1, 2) and c2.padding == (0, 0, 0, 1)
    assert c2.activation == "relu"
    np.testing.assert_array_equal(c2.weight[:, :, 0, :], model.c2.weight.detach().numpy())
    assert (ops[3].in_features, ops[3].out_features) == (155, 10)
    _check_numerics(model, ops, (4, 64))


def test_board_filling_cnn():
    torch.manual_seed(0)
    model = BoardFillingCNN().eval()
    mod = _partition(model, torch.randn(2, 3, 224))
    func = _single(mod)
    assert _host_ops(mod) == []
    assert input_shape(func) == (3, 1, 224)
    ops = extract_network(func)
    assert _kinds(ops) == ["Conv2D", "Conv2D", "Conv2D", "Flatten", "DenseLayer"]
    # padding="same": symmetric for k=3, (5, 6) for k=12 (importer: pad(0, 1) + conv pad 5).
    assert [op.padding for op in ops[:3]] == [(0, 1, 0, 1), (0, 5, 0, 6), (0, 0, 0, 1)]
    assert [op.weight.shape for op in ops[:3]] == [(1, 3, 1, 3), (5, 1, 1, 12), (16, 5, 1, 3)]
    assert ops[2].stride == (1, 2)
    assert (ops[4].in_features, ops[4].out_features) == (1792, 16)
    _check_numerics(model, ops, (3, 224))


def test_pool1d_network():
    torch.manual_seed(0)
    model = PoolNet1D().eval()
    mod = _partition(model, torch.randn(2, 4, 50))
    func = _single(mod)
    assert _host_ops(mod) == []
    assert _composites(func) == [
        "spinnaker.conv1d_pad_bias_relu", "spinnaker.max_pool1d_pad", "spinnaker.avg_pool1d",
        "spinnaker.max_pool1d", "spinnaker.avg_pool1d_pad", "spinnaker.flatten", "spinnaker.dense_bias"]
    ops = extract_network(func)
    assert _kinds(ops) == ["Conv2D", "maxpool", "avgpool", "maxpool", "avgpool", "Flatten", "DenseLayer"]
    assert ops[0].padding == (0, 1, 0, 2) and ops[0].stride == (1, 2)
    pools = ops[1:5]
    assert [p.kernel for p in pools] == [(1, 3), (1, 3), (1, 2), (1, 2)]
    assert [p.padding for p in pools] == [(0, 1, 0, 1), (0, 1, 0, 1), (0, 1, 0, 1), (0, 1, 0, 2)]
    assert [p.out_hw for p in pools] == [(1, 13), (1, 7), (1, 4), (1, 6)]
    assert [p.count_include_pad for p in pools[1::2]] == [False, True]
    _check_numerics(model, ops, (4, 50))


# ---------------------------------------------------------------------------
# Gating, checks, folding
# ---------------------------------------------------------------------------
def test_default_offloads_only_dense():
    torch.manual_seed(0)
    model = LeNet5().eval()
    x = torch.randn(2, 1, 28, 28)
    mod = _partition(model, x, convolutions=False)
    func = _single(mod)
    assert _composites(func) == ["spinnaker.dense_bias_relu", "spinnaker.dense_bias_relu",
                                 "spinnaker.dense_bias"]
    assert extract_graph(func).ops[0].in_features == 400
    host = _host_ops(mod)
    assert host.count("relax.nn.conv2d") == 2 and host.count("relax.nn.max_pool2d") == 2
    assert "relax.reshape" in host and "relax.zeros_like" in host  # the importer's form untouched
    # Same module as partitioning with the keyword left out.
    tvm.ir.assert_structural_equal(mod, partition_for_spinnaker(from_torch(model, x)))
    # ResNet-8 with the default: nothing but the dense layer; batch_norm not folded.
    resnet = randomize_bn(ResNet8()).eval()
    mod = _partition(resnet, torch.randn(2, 3, 32, 32), convolutions=False)
    assert _composites(_single(mod)) == ["spinnaker.dense_bias"]
    assert "relax.nn.batch_norm" in _host_ops(mod)


def test_dense_chain_also_extracts_as_network():
    model = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 4)).eval()
    for convolutions in (False, True):
        mod = _partition(model, torch.randn(2, 8), convolutions=convolutions)
        func = _single(mod)
        ops = extract_network(func)
        assert [type(op) for op in ops] == [DenseLayer, DenseLayer]
        assert input_shape(func) == (1, 1, 8)
        _check_numerics(model, ops, (8,))


class _ConvOnly(nn.Module):
    def __init__(self, conv: nn.Module):
        super().__init__()
        self.conv = conv

    def forward(self, x):
        return torch.relu(self.conv(x))


@pytest.mark.parametrize("conv", [
    nn.Conv2d(4, 6, 3, dilation=2),
    nn.Conv2d(4, 6, 3, groups=2),               # grouped, not depthwise
    nn.Conv2d(4, 8, 3, groups=2),               # grouped with two filters per group
    nn.Conv1d(4, 6, 3, dilation=2),
], ids=["dilation2", "groups2", "groups2_x2", "conv1d_dilation2"])
def test_unsupported_convs_stay_on_cpu(conv):
    x = torch.randn(2, 4, 12, 12) if isinstance(conv, nn.Conv2d) else torch.randn(2, 4, 12)
    mod = _partition(_ConvOnly(conv), x)
    assert offloaded_functions(mod) == {}
    assert any(name.startswith("relax.nn.conv") for name in _host_ops(mod))


def test_depthwise_is_offloaded():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.ReLU(),
                          nn.Conv2d(4, 8, 1), nn.Sigmoid()).eval()
    mod = _partition(model, torch.randn(2, 4, 10, 10))
    func = _single(mod)
    assert _composites(func) == ["spinnaker.conv2d_bias_relu", "spinnaker.conv2d_bias_sigmoid"]
    ops = extract_network(func)
    assert ops[0].groups == 4 and ops[0].weight.shape == (4, 1, 3, 3)
    assert ops[1].activation == "sigmoid"
    _check_numerics(model, ops, (4, 10, 10))


def test_depthwise_with_a_channel_multiplier_is_offloaded():
    """nn.Conv2d(C, k * C, groups=C): output channel o reads input channel o // k; with a
    BatchNorm after it (folded per output channel)."""
    torch.manual_seed(0)
    model = randomize_bn(nn.Sequential(nn.Conv2d(4, 8, 3, padding=1, groups=4), nn.BatchNorm2d(8), nn.ReLU(),
                                       nn.Conv2d(8, 24, 3, stride=2, groups=8, bias=False), nn.Tanh())).eval()
    mod = _partition(model, torch.randn(2, 4, 10, 10))
    func = _single(mod)
    assert _composites(func) == ["spinnaker.conv2d_bias_relu", "spinnaker.conv2d_tanh"]
    ops = extract_network(func)
    assert [(op.groups, op.weight.shape, op.channel_multiplier) for op in ops] == \
        [(4, (8, 1, 3, 3), 2), (8, (24, 1, 3, 3), 3)]
    assert "depthwise x2" in ops[0].name
    _check_numerics(model, ops, (4, 10, 10))


def test_pool2d_variants():
    class Pools(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(3, 5, 3, padding=1, bias=False)
            self.fc = nn.Linear(5, 3)

        def logits(self, x):
            x = torch.tanh(self.c(x))                                                        # 12x12
            # 7x7: the last window runs past the padding (ceil_mode): torch's divisor is 2x3 there
            x = F.avg_pool2d(x, 3, 2, padding=1, ceil_mode=True, count_include_pad=True)
            x = F.max_pool2d(x, 3, 2, padding=1, ceil_mode=True)                             # 4x4
            x = F.avg_pool2d(x, 2, 1, padding=1, count_include_pad=False)                    # 5x5
            x = F.avg_pool2d(x, (2, 3), (2, 1))                                              # 2x3
            x = F.adaptive_avg_pool2d(x, 1)                                                  # 1x1 (mean)
            return self.fc(torch.flatten(x, 1))

        forward = logits

    torch.manual_seed(0)
    model = Pools().eval()
    mod = _partition(model, torch.randn(2, 3, 12, 12))
    func = _single(mod)
    ops = extract_network(func)
    assert _composites(func)[:2] == ["spinnaker.conv2d_tanh", "spinnaker.avg_pool2d"]
    assert "spinnaker.global_avg_pool2d" in _composites(func)
    assert ops[0].bias is None
    assert [op.out_hw for op in ops[1:6]] == [(7, 7), (4, 4), (5, 5), (2, 3), (1, 1)]
    assert [op.count_include_pad for op in ops[1:6:2]] == [True, False, True]
    _check_numerics(model, ops, (3, 12, 12))


def test_pool_with_dilation_stays_on_cpu():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2, dilation=2))
    mod = _partition(model, torch.randn(2, 3, 12, 12))
    (func,) = offloaded_functions(mod).values()
    assert _composites(func) == ["spinnaker.conv2d_bias_relu"]
    assert "relax.nn.max_pool2d" in _host_ops(mod)


def test_zero_pad_before_max_pool_stays_on_cpu():
    # max over zero padding is not max over -inf padding: the pad cannot be absorbed.
    model = _Lambda(lambda x: F.max_pool2d(F.pad(torch.tanh(x), (1, 1, 1, 1)), 2))
    mod = _partition(model, torch.randn(2, 3, 8, 8))
    assert "relax.nn.pad" in _host_ops(mod)


class _Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


class _AddCases(nn.Module):
    """conv(x) + pos (a constant, not per channel) and relu(conv) + gelu(conv) (host operand)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 3, padding=1)
        self.c = nn.Conv2d(4, 4, 1)
        self.pos = nn.Parameter(torch.randn(1, 4, 6, 6))

    def forward(self, x):
        h = self.a(x) + self.pos
        return self.c(torch.relu(h) + F.gelu(self.b(x)))


def test_non_residual_adds_stay_on_cpu():
    mod = _partition(_AddCases(), torch.randn(2, 3, 6, 6))
    host = _host_ops(mod)
    assert host.count("relax.add") == 2 and "relax.nn.gelu" in host
    for func in offloaded_functions(mod).values():
        assert not any(c.startswith("spinnaker.add") for c in _composites(func))


def test_add_of_adds_is_offloaded():
    class Chain(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = (nn.Conv2d(3, 3, 3, padding=1) for _ in range(3))

        def forward(self, x):
            h = torch.relu(self.a(x))
            s = torch.relu(h + self.b(h))
            return torch.tanh(s + self.c(h)) + h

    torch.manual_seed(0)
    model = Chain().eval()
    mod = _partition(model, torch.randn(2, 3, 7, 7))
    func = _single(mod)
    assert _host_ops(mod) == []
    ops = extract_network(func)
    assert [type(op) for op in ops].count(Add) == 3
    assert [op.activation for op in ops if isinstance(op, Add)] == ["relu", "tanh", "none"]
    _check_numerics(model, ops, (3, 7, 7))


def test_flatten_of_a_residual_add_and_of_the_network_input():
    class ResFlat(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(2, 3, 3, padding=1), nn.Conv2d(3, 3, 3, padding=1)
            self.fc = nn.Linear(3 * 5 * 5, 4)

        def forward(self, x):
            h = torch.relu(self.a(x))
            return self.fc(torch.flatten(torch.relu(h + self.b(h)), 1))  # add -> flatten

    torch.manual_seed(0)
    model = ResFlat().eval()
    mod = _partition(model, torch.randn(2, 2, 5, 5))
    func = _single(mod)
    assert _host_ops(mod) == []
    ops = extract_network(func)
    assert _kinds(ops) == ["Conv2D", "Conv2D", "Add", "Flatten", "DenseLayer"]
    _check_numerics(model, ops, (2, 5, 5))
    # An MLP on images: the flatten of the input is a free host reshape, as without convolutions.
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.ReLU(), nn.Linear(10, 3)).eval()
    mod = _partition(mlp, torch.randn(2, 1, 8, 8))
    func = _single(mod)
    assert _host_ops(mod) == ["relax.reshape"] and input_shape(func) == (1, 1, 64)
    assert [type(op) for op in extract_network(func)] == [DenseLayer, DenseLayer]


def test_batch_norm_folding():
    class BN(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.b1 = nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4)  # conv -> bn
            self.c2, self.b2 = nn.Conv2d(4, 4, 3, groups=4), nn.BatchNorm2d(4)   # depthwise + bias -> bn
            self.c3, self.b3 = nn.Conv1d(4, 5, 3), nn.BatchNorm1d(5)

        def forward(self, x):
            x = torch.relu(self.b1(self.c1(x)))
            x = self.b2(self.c2(x))                                  # (n, 4, 6, 8)
            return torch.relu(self.b3(self.c3(x.flatten(2))))      # 1D over 48 steps

    torch.manual_seed(0)
    model = randomize_bn(BN()).eval()
    x = torch.randn(3, 3, 10, 12)
    mod = from_torch(model, x)
    folded = fold_batch_norm(mod)
    ex = tvm.compile(folded, target="llvm")
    vm = relax.VirtualMachine(ex, tvm.cpu())
    y = vm["main"](tvm.runtime.tensor(x.numpy())).numpy()
    np.testing.assert_allclose(y, model(x).detach().numpy(), rtol=1e-4, atol=1e-5)
    assert "relax.nn.batch_norm" in _host_ops(mod)  # the input module is not modified
    partitioned = partition_for_spinnaker(mod, convolutions=True)
    assert "relax.nn.batch_norm" not in _host_ops(partitioned)
    # reshape (n, 4, 6, 8) -> (n, 4, 48) is not a flatten to a vector: the network splits there.
    funcs = offloaded_functions(partitioned)
    assert len(funcs) == 2 and _host_ops(partitioned) == ["relax.reshape"]


def test_non_constant_conv_weight_and_other_dtypes_stay_on_cpu():
    class TwoInputs(nn.Module):
        def forward(self, x, w):
            return torch.relu(F.conv2d(x, w))

    x, w = torch.randn(2, 3, 8, 8), torch.randn(4, 3, 3, 3)
    ep = torch.export.export(TwoInputs(), (x, w), dynamic_shapes=({0: torch.export.Dim("batch")}, None))
    from tvm.relax.frontend.torch import from_exported_program

    mod = partition_for_spinnaker(from_exported_program(ep), convolutions=True)
    assert offloaded_functions(mod) == {}

    def conv_module(dtype, data_shape, layout="NCHW"):
        bb = relax.BlockBuilder()
        data = relax.Var("x", relax.TensorType(data_shape, dtype))
        with bb.function("main", [data]):
            with bb.dataflow():
                kernel = relax.const(np.ones((4, 3, 3, 3) if layout == "NCHW" else (3, 3, 3, 4), dtype))
                out = bb.emit_output(relax.op.nn.conv2d(
                    data, kernel, data_layout=layout, kernel_layout="OIHW" if layout == "NCHW" else "HWIO"))
            bb.emit_func_output(out)
        return bb.get()

    n, h = tirx.Var("n", "int64"), tirx.Var("h", "int64")
    assert offloaded_functions(partition_for_spinnaker(
        conv_module("float32", [n, 3, 8, 8]), convolutions=True)) != {}  # the control
    for mod in (conv_module("float16", [n, 3, 8, 8]),      # not float32
                conv_module("float32", [n, 3, h, 8]),      # symbolic height
                conv_module("float32", [n, 8, 8, 3], "NHWC")):
        assert offloaded_functions(partition_for_spinnaker(mod, convolutions=True)) == {}


def test_extract_graph_of_two_outputs():
    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(3, 4, 3)
            self.a, self.b = nn.Conv2d(4, 2, 1), nn.Conv2d(4, 2, 1)

        def forward(self, x):
            h = torch.relu(self.c(x))
            return self.a(h), self.b(h)

    mod = _partition(TwoHeads(), torch.randn(2, 3, 8, 8))
    func = _single(mod)
    graph = extract_graph(func)  # one graph, both heads its results
    assert len(graph.ops) == 3 and graph.outputs == [1, 2]
    assert [op.inputs for op in graph.ops] == [(-1,), (0,), (0,)]


def test_forward_network_default_inputs_and_flatten():
    # Empty ``inputs`` means "the previous op" (layers.py convention).
    rng = np.random.default_rng(0)
    conv = Conv2D(rng.normal(size=(2, 1, 2, 2)).astype(np.float32), None, padding=(0, 0, 1, 1))
    ops = [conv, Flatten(), DenseLayer(rng.normal(size=(3, 2 * 3 * 3)).astype(np.float32), None)]
    x = rng.normal(size=(4, 1, 3, 3)).astype(np.float32)
    ref = torch.nn.functional.conv2d(F.pad(torch.from_numpy(x), (0, 1, 0, 1)), torch.from_numpy(conv.weight))
    ref = ref.flatten(1).numpy() @ ops[2].weight.T
    np.testing.assert_allclose(forward_network(ops, x), ref, rtol=1e-5, atol=1e-5)
