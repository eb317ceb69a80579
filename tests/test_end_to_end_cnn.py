"""Convolutional networks from PyTorch on the emulated SpiNN-5, against TVM's llvm build
(float32), each offloaded function's float ops, and the integer reference (bit for bit)."""
import numpy as np
import pytest
import torch
import tvm
from tvm import relax

import tvm_spinn
from tvm_spinn import zoo
from tvm_spinn.graph.extract import extract_network, input_shape
from tvm_spinn.partition import offloaded_functions
from tvm_spinn.graph.network import float_forward

MODELS = {
    "conv1d_small": (zoo.Conv1DSmall, (4, 64)),
    "board_filling_cnn": (zoo.BoardFillingCNN, (3, 224)),
    "conv1d_pools": (zoo.PoolNet1D, (4, 50)),
    "lenet5": (zoo.LeNet5, (1, 28, 28)),
    "resnet8": (zoo.ResNet8, (3, 32, 32)),
    "wide_conv1d": (zoo.WideConv1D, (256, 64)),  # cut by input-channel groups
    "wide_conv2d": (zoo.WideConv2D, (128, 20, 20)),
}


def run(ex, x):
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return vm, vm["main"](tvm.runtime.tensor(np.ascontiguousarray(x, np.float32))).numpy()


@pytest.mark.parametrize("name", list(MODELS))
def test_cnn_bit_exact_and_within_tolerance_of_llvm(name, record_board_io):
    make, shape = MODELS[name]
    torch.manual_seed(0)
    model = zoo.randomize_bn(make()).eval()
    x = torch.randn((200,) + shape, generator=torch.Generator().manual_seed(1)).numpy()
    mod = tvm_spinn.from_torch(model, (torch.from_numpy(x[:2]),))
    ex = tvm_spinn.build(mod, calibration=x)
    vm, y = run(ex, x)
    executors = tvm_spinn.executors(vm)
    assert len(executors) == 1, "the whole network must be one offloaded function"
    program = executors[0].program
    assert any(op.kind == "Conv2D" for op in program.ops)
    (board, x_q, y_q), = [c for c in record_board_io if c[0] is executors[0].board]
    np.testing.assert_array_equal(y_q, tvm_spinn.integer_reference(program, x_q))
    # The offloaded function against its own float ops: within the stated bound.
    func = next(iter(offloaded_functions(tvm_spinn.partition_for_spinnaker(mod, convolutions=True)).values()))
    ops = extract_network(func)
    x_in = (x_q.astype(np.float64) * program.input_scale).reshape((-1,) + input_shape(func))
    y_float = float_forward(ops, x_in.astype(np.float32))[-1].reshape(len(x), -1)
    bound = float(program.error_bound.max())
    err = np.abs(y_q * program.output_scale - y_float).max()
    assert err <= bound
    # The worst-case bound compounds through deep networks until it says nothing (ResNet-8:
    # ~2e4 against outputs below 1), so the measured error must also be small: 0.1% of the
    # output range (about 1e-4 is typical).
    assert err <= 1e-3 * np.abs(y_float).max(), (err, np.abs(y_float).max())
    # The whole model against TVM's llvm build (softmax, if any, on the host).
    y_llvm = run(tvm.compile(mod, target="llvm"), x)[1]
    ends_in_softmax = isinstance(model, (zoo.Conv1DSmall, zoo.ResNet8))
    tol = np.expm1(2 * min(bound, 10.0)) if ends_in_softmax else bound
    assert np.abs(y - y_llvm).max() <= min(tol, 2e-3 * np.abs(y_llvm).max())
    assert (y.argmax(1) == y_llvm.argmax(1)).mean() >= 0.97
    stats = tvm_spinn.statistics(vm)
    assert stats.cores <= 808 and stats.packets_per_inference > 0
    # A conv whose one output channel x row does not fit a core's DTCM (the wide ones) is cut
    # by input channels; so may be one whose input rows alone take longer to receive than the
    # host link takes to bring a sample (the cycle budget, by the calibrated cycle model).
    split = [op for op in program.ops if op.n_splits > 1 and op.kind == "Conv2D"]
    if name.startswith("wide_"):
        assert split, "a conv too big for a core is cut by input channels"
        # their tiles fill DTCM: more samples in flight would take more cores
        assert program.n_slots == 4
    if name == "resnet8":  # a deep pipeline whose tiles have room for 8 samples' inputs
        assert program.n_slots == 8


def test_digits_cnn_accuracy_int16_close_to_float():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    x_train, x_test, y_train, y_test = train_test_split(x, digits.target, test_size=0.3, random_state=0)
    torch.manual_seed(0)
    nn = torch.nn
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
                          nn.Flatten(), nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    for _ in range(120):
        opt.zero_grad()
        nn.functional.cross_entropy(model(xt), yt).backward()
        opt.step()
    model.eval()
    float_acc = (model(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean()
    ex = tvm_spinn.build(tvm_spinn.from_torch(model, (xt[:2],)), calibration=x_train[:300])
    vm, y = run(ex, x_test)
    assert any(op.kind == "Conv2D" for op in tvm_spinn.executors(vm)[0].program.ops)
    int16_acc = (y.argmax(1) == y_test).mean()
    assert float_acc > 0.9
    assert abs(int16_acc - float_acc) <= 0.005, (float_acc, int16_acc)


def test_conv_too_big_for_a_core_names_the_layer_and_resource():
    # One input channel's kernel rows for 4 samples in flight: 4 x 20000 int16 > 64 KB.
    model = torch.nn.Sequential(torch.nn.Conv1d(1, 4, 3), torch.nn.ReLU()).eval()
    x = torch.randn(2, 1, 20000)
    with pytest.raises(tvm_spinn.ResourceError, match=r"^0 \(Conv1d 1->4, 3, relu\).*one input channel.*DTCM"):
        tvm_spinn.build(tvm_spinn.from_torch(model, (x,)), calibration=x.numpy(), strict=True)


def test_conv_cut_by_input_channels_too_big_for_the_board():
    # Fits only when cut into input-channel groups (at most 13 channels x 512 columns x 4 slots
    # per core), and then needs about 3,200 cores.
    model = torch.nn.Sequential(torch.nn.Conv1d(4096, 64, 3), torch.nn.ReLU()).eval()
    x = torch.randn(2, 4096, 512)
    with pytest.raises(tvm_spinn.ResourceError, match=r"too big for the board.*0 \(Conv1d 4096->64, 3, relu\)"):
        tvm_spinn.build(tvm_spinn.from_torch(model, (x,)), calibration=x.numpy(), strict=True)


def test_cnn_too_big_for_the_board():
    nn = torch.nn
    model = nn.Sequential(*[m for _ in range(12) for m in (nn.Conv2d(64, 64, 3, padding=1), nn.ReLU())]).eval()
    x = torch.randn(2, 64, 32, 32)  # every conv fits a core; together they need > 808 cores (about 88 each)
    with pytest.raises(tvm_spinn.ResourceError, match=r"too big for the board.*cores"):
        tvm_spinn.build(tvm_spinn.from_torch(model, (x,)), calibration=x.numpy(), strict=True)
