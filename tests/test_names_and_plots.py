"""Layers named as the user's model names them (module paths, run order) and the report's plots."""
import logging

import numpy as np
import pytest
import torch
import tvm
from torch import nn
from tvm import relax

import tvm_spinn
from tvm_spinn.graph.extract import extract_graph
from tvm_spinn.partition import offloaded_functions, partition_for_spinnaker


class Net(nn.Module):
    """Named submodules in an nn.Sequential; a GELU on the host splits it into two functions."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 8, 3),
                                      nn.BatchNorm2d(8), nn.ReLU())
        self.mid = nn.Linear(8 * 3 * 3, 16)
        self.head = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 10))

    def forward(self, x):
        return self.head(nn.functional.gelu(self.mid(torch.flatten(self.features(x), 1))))


@pytest.fixture(scope="module")
def net_vm():
    torch.manual_seed(0)
    model = Net().eval()
    with torch.no_grad():  # a BatchNorm that changes something, so that folding it matters
        model.features[4].running_var.uniform_(0.5, 2.0)
    x = torch.randn(16, 1, 12, 12)
    ex = tvm_spinn.build(tvm_spinn.from_torch(model, (x[:2],)), calibration=x.numpy())
    vm = relax.VirtualMachine(ex, tvm.cpu())
    y = vm["main"](tvm.runtime.tensor(x.numpy())).numpy()
    np.testing.assert_allclose(y, model(x).detach().numpy(), atol=0.02)
    return ex, vm


def test_layers_carry_the_module_paths_in_reports_and_statistics(net_vm):
    ex, vm = net_vm
    report = tvm_spinn.report.model_report(ex)
    # BatchNorm folded into features.3 keeps its name; functions in the order main calls them.
    assert "features.3 (Conv2d 4->8, 3x3, relu)" in report
    assert report.index("function 1 (features.0 .. mid)") < report.index("function 2 (head.0 .. head.2)")
    assert "head.0 (Linear 16->16, relu)" in report and "fused_relax" not in report
    assert "spinnaker.conv2d_bias_relu (features.3)" in tvm_spinn.report.offload_report(ex)
    stats = tvm_spinn.statistics(vm)
    assert "features.3 (Conv2d 4->8, 3x3, relu)" in stats.layer_cycles_per_sample
    assert list(stats.layer_cycles_per_sample)[0].startswith("features.0 (")
    assert set(stats.core_layers.values()) >= {"features.3 (Conv2d 4->8, 3x3, relu)", "head.2 (Linear 16->10)"}
    assert "features." in tvm_spinn.report.format_statistics(stats)


def test_a_layer_too_big_is_named_by_its_module(caplog):
    # features.3 alone: one input channel's kernel rows for 4 samples in flight overflow DTCM.
    model = nn.Sequential(nn.Identity(), nn.Identity(), nn.Identity(), nn.Conv1d(1, 4, 3), nn.ReLU()).eval()
    x = torch.randn(2, 1, 20000)
    mod = tvm_spinn.from_torch(model, (x,))
    with pytest.raises(tvm_spinn.ResourceError, match=r"^3 \(Conv1d 1->4, 3, relu\): .*DTCM"):
        tvm_spinn.build(mod, calibration=x.numpy(), strict=True)
    with caplog.at_level(logging.WARNING, logger="tvm_spinn"):
        tvm_spinn.build(mod, calibration=x.numpy())
    warning = next(r.getMessage() for r in caplog.records if "kept on the host" in r.getMessage())
    assert warning.startswith("kept on the host: function 1 (3): 3 (Conv1d 1->4, 3, relu): ")
    assert "fused_relax" not in warning


def test_plain_relax_layers_are_numbered_over_the_model():
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((4, 16), "float32"))
    rng = np.random.default_rng(0)
    w1, w2 = (relax.const(rng.normal(size=s).astype(np.float32)) for s in ((16, 8), (8, 4)))
    with bb.function("main", [x]):
        with bb.dataflow():
            h = bb.emit(relax.op.nn.relu(relax.op.matmul(x, w1)))
            y = bb.emit_output(relax.op.matmul(h, w2))
        bb.emit_func_output(y)
    (func,) = offloaded_functions(partition_for_spinnaker(bb.get())).values()
    assert [op.name for op in extract_graph(func).ops] == ["dense #1 (16->8, relu)", "dense #2 (8->4)"]


@pytest.fixture(scope="module")
def mlp_vm():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 10)).eval()
    x = torch.randn(8, 64)
    vm = relax.VirtualMachine(tvm_spinn.build(tvm_spinn.from_torch(model, (x,)), calibration=x.numpy()), tvm.cpu())
    vm["main"](tvm.runtime.tensor(x.numpy()))
    return vm


@pytest.mark.parametrize("which", ["mlp", "cnn"])
def test_plots_build_and_save(which, mlp_vm, net_vm, tmp_path):
    from matplotlib.collections import LineCollection, PatchCollection

    vm = mlp_vm if which == "mlp" else net_vm[1]
    progs = tvm_spinn.report.programs(vm)
    stats = tvm_spinn.statistics(vm)
    used = {tuple(p.placements[c.label][:2]) for prog in progs for p in [prog] for c in prog.cores}
    fig = tvm_spinn.report.plot_placement(vm)
    (ax,) = fig.axes[:1]
    chip_labels = [t.get_text() for t in ax.texts if t.get_text().startswith("chip ")]
    assert {f"chip {x},{y}" for x, y in used} <= set(chip_labels)
    cells = next(c for c in ax.collections if isinstance(c, PatchCollection))
    assert len(cells.get_paths()) == 18 * len(chip_labels)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert [lay.name for prog in progs for lay in prog.layers if lay.cores] == legend[:-3]
    links = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert len(links) == (1 if stats.link_packets else 0)
    if links:
        assert len(links[0].get_segments()) == len(stats.link_packets)

    fig = tvm_spinn.report.plot_layers(vm)
    bars = fig.axes[0].patches
    assert len(bars) == len(stats.layer_cycles_per_sample)
    assert sorted(b.get_width() for b in bars) == pytest.approx(sorted(stats.layer_cycles_per_sample.values()))

    first = next(lay for prog in progs for lay in prog.layers if lay.tiles)
    fig = tvm_spinn.report.plot_tiling(vm, first.name.split(" (")[0])
    drawn = sum(len(c.get_paths()) for a in fig.axes for c in a.collections)
    assert drawn == len(first.tiles) == first.row_tiles * first.col_tiles or first.kind != "DenseLayer"

    for fmt in ("png", "svg"):
        paths = tvm_spinn.report.save_plots(vm, tmp_path / fmt, fmt=fmt)
        n_tiled = sum(1 for prog in progs for lay in prog.layers if lay.tiles and not lay.fused_into)
        assert len(paths) == 2 + n_tiled
        for path in paths:
            assert path.endswith("." + fmt)
            with open(path, "rb") as f:
                head = f.read(8)
            assert head.startswith(b"\x89PNG") if fmt == "png" else b"<?xml" in head or head.startswith(b"<svg")


def test_plots_say_what_is_missing(mlp_vm):
    with pytest.raises(ValueError, match="no layer 'nope'.*0, 2"):
        tvm_spinn.report.plot_tiling(mlp_vm, "nope")
