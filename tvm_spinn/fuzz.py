"""A differential fuzzer: random PyTorch models over the ops the board runs (and a sprinkle
of ops it does not), built for SpiNNaker and compared with TVM's llvm build.

:func:`models` is a hypothesis strategy of (model, input shape, description). :func:`judge`
builds one model and gives its verdict:

- ``right``: on fresh samples from the calibration distribution (N(0, 1)), the error is
  at most 0.1% of the llvm output's range, and every board run is bit for bit the
  integer reference;
- ``imprecise``: bit for bit, but the error exceeds 0.1% of the output range while staying
  inside the build's stated worst-case error bound (a model wholly on the board, whose
  output range is far below the range int16 must hold inside it: a limit of int16 with
  one scale per tensor, not a fault);
- ``wrong``: anything else (a board run that is not the integer reference, or an error
  beyond 0.1% that no bound explains);
- ``clear error``: a :class:`tvm_spinn.SpinnakerError` (e.g. a model too big for the board
  even on the host fallback's terms);
- ``raw exception``: anything else (a bug).

``benchmarks/fuzz.py`` runs any number and prints the counts; the tests run a small
seeded set.
"""
from __future__ import annotations

import traceback
import zlib
from dataclasses import dataclass
from typing import Callable, List, Tuple

import numpy as np
import torch
from hypothesis import strategies as st
from torch import nn

from .zoo import randomize_bn

TOLERANCE = 1e-3  # of the output range
ACTS = ("none", "relu", "tanh", "sigmoid")
HOST_ACTS = ("gelu", "relu6", "leaky_relu")  # not computed on the board: they split the model


def _act(name: str) -> nn.Module:
    return {"none": nn.Identity(), "relu": nn.ReLU(), "tanh": nn.Tanh(), "sigmoid": nn.Sigmoid(),
            "gelu": nn.GELU(), "relu6": nn.ReLU6(), "leaky_relu": nn.LeakyReLU(0.1)}[name]


class Residual(nn.Module):
    def __init__(self, body: nn.Module, act: nn.Module):
        super().__init__()
        self.body, self.act = body, act

    def forward(self, x):
        return self.act(x + self.body(x))


class Concat(nn.Module):
    def __init__(self, a: nn.Module, b: nn.Module):
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x):
        return torch.cat([self.a(x), self.b(x)], 1)


def _init(model: nn.Module, seed: int) -> nn.Module:
    """Weights scaled to keep activations O(1) through depth; BN with random statistics."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            fan_in = m.weight[0].numel()
            m.weight.data.copy_(torch.randn(m.weight.shape, generator=g) * (1.2 / np.sqrt(fan_in)))
            if m.bias is not None:
                m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
    return randomize_bn(model, seed).eval()


@st.composite
def _act_name(draw) -> str:
    return draw(st.sampled_from(ACTS + HOST_ACTS) if draw(st.integers(0, 9)) == 0 else st.sampled_from(ACTS))


@st.composite
def _conv_block(draw, dim: int, c: int, size: Tuple[int, ...]):
    """(module, out channels, out spatial size) of a conv (+BN) (+act) over c x size."""
    k = draw(st.integers(1, min(3, min(size) + 2)))
    stride = draw(st.integers(1, 2))
    pad = draw(st.integers(0, k - 1))
    depthwise = c > 1 and draw(st.integers(0, 4)) == 0
    oc = c * draw(st.integers(1, 2)) if depthwise else draw(st.integers(1, 8))
    out = tuple((s + 2 * pad - k) // stride + 1 for s in size)
    if min(out) < 1:
        k, stride, pad, out = 1, 1, 0, size
    conv = (nn.Conv1d if dim == 1 else nn.Conv2d)(c, oc, k, stride, pad, groups=c if depthwise else 1)
    layers: List[nn.Module] = [conv]
    if draw(st.integers(0, 3)) == 0:
        layers.append((nn.BatchNorm1d if dim == 1 else nn.BatchNorm2d)(oc))
    layers.append(_act(draw(_act_name())))
    return nn.Sequential(*layers), oc, out


@st.composite
def _pool_block(draw, dim: int, c: int, size: Tuple[int, ...]):
    k = draw(st.integers(1, min(3, min(size))))
    stride = draw(st.integers(1, max(1, k)))
    pad = draw(st.integers(0, k // 2))
    kind = draw(st.sampled_from(["max", "avg"]))
    cls = {("max", 1): nn.MaxPool1d, ("max", 2): nn.MaxPool2d, ("avg", 1): nn.AvgPool1d, ("avg", 2): nn.AvgPool2d}
    pool = cls[(kind, dim)](k, stride, pad)
    out = tuple((s + 2 * pad - k) // stride + 1 for s in size)
    return pool, c, out


@st.composite
def _tensor_body(draw, dim: int, c: int, size: Tuple[int, ...]):
    blocks: List[nn.Module] = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["conv", "conv", "pool", "residual", "concat"]))
        if kind == "pool" and min(size) >= 2:
            block, c, size = draw(_pool_block(dim, c, size))
        elif kind == "residual":
            conv = (nn.Conv1d if dim == 1 else nn.Conv2d)(c, c, 3, 1, 1)
            block = Residual(conv, _act(draw(st.sampled_from(["none", "relu"]))))
        elif kind == "concat":
            a, ca, sa = draw(_conv_block(dim, c, size))
            b = (nn.Conv1d if dim == 1 else nn.Conv2d)(c, draw(st.integers(1, 4)), 1)
            if sa != size:
                a = (nn.Conv1d if dim == 1 else nn.Conv2d)(c, ca, 1)
            block, c = Concat(a, b), ca + b.out_channels
        else:
            block, c, size = draw(_conv_block(dim, c, size))
        blocks.append(block)
    return blocks, c, size


@st.composite
def _dense_head(draw, k: int):
    layers: List[nn.Module] = []
    for _ in range(draw(st.integers(1, 3))):
        n = draw(st.integers(1, 24))
        layers.append(nn.Linear(k, n))
        if draw(st.integers(0, 4)) == 0:
            layers.append(nn.BatchNorm1d(n))
        layers.append(_act(draw(_act_name())))
        k = n
    return layers


@st.composite
def models(draw) -> Tuple[nn.Module, Tuple[int, ...], str]:
    """A random model and one sample's input shape."""
    seed = draw(st.integers(0, 2**31 - 1))
    kind = draw(st.sampled_from(["dense", "conv1d", "conv2d"]))
    if kind == "dense":
        k = draw(st.integers(1, 48))
        body, shape = draw(_dense_head(k)), (k,)
    else:
        dim = 1 if kind == "conv1d" else 2
        c = draw(st.integers(1, 4))
        size = tuple(draw(st.integers(2, 12)) for _ in range(dim))
        blocks, oc, out = draw(_tensor_body(dim, c, size))
        body = blocks + [nn.Flatten()] + draw(_dense_head(oc * int(np.prod(out)))) if draw(st.booleans()) else blocks
        shape = (c,) + size
    model = _init(nn.Sequential(*body), seed)
    return model, shape, f"{kind} seed={seed}: {model}".replace("\n", " ")


def copies() -> st.SearchStrategy:
    """How many copies of the model to build (tvm_spinn.build(replicas=...)): usually one;
    the batch of fresh samples is then no multiple of them."""
    return st.sampled_from([1, 1, 2, 3])


@dataclass
class Verdict:
    verdict: str  # right | wrong | clear error | raw exception
    detail: str
    description: str


def judge(model: nn.Module, shape: Tuple[int, ...], description: str = "", n_calib: int = 128,
          n_fresh: int = 31, replicas: int = 1) -> Verdict:
    """Build ``model`` for SpiNNaker (``replicas`` copies) and judge it (see the module
    docstring)."""
    import tvm
    from tvm import relax

    import tvm_spinn
    from tvm_spinn.runtime.emulator import EmulatedBoard

    rng = np.random.default_rng(zlib.crc32(description.encode()))  # the same samples in every process
    calib = rng.standard_normal((n_calib,) + tuple(shape)).astype(np.float32)
    x = rng.standard_normal((n_fresh,) + tuple(shape)).astype(np.float32)
    runs: List[Tuple[object, np.ndarray, np.ndarray]] = []
    original: Callable = EmulatedBoard.run

    def run(self, x_q):
        y_q = original(self, x_q)
        runs.append((self, np.array(x_q), np.array(y_q)))
        return y_q

    try:
        mod = tvm_spinn.from_torch(model, (torch.from_numpy(calib[:2]),))
        ex = tvm_spinn.build(mod, calibration=calib, replicas=replicas)
        vm = relax.VirtualMachine(ex, tvm.cpu())
        EmulatedBoard.run = run
        try:
            y = vm["main"](tvm.runtime.tensor(x)).numpy()
        finally:
            EmulatedBoard.run = original
        ref = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
        programs = {id(e.board): e.program for e in tvm_spinn.executors(vm)}
        for board, x_q, y_q in runs:
            if id(board) in programs and not np.array_equal(y_q, tvm_spinn.integer_reference(programs[id(board)], x_q)):
                return Verdict("wrong", "a board run differs from the integer reference", description)
        span = float(ref.max() - ref.min()) if ref.size else 0.0
        err = float(np.abs(y - ref).max()) if ref.size else 0.0
        if err <= TOLERANCE * max(span, 1e-6):
            return Verdict("right", f"max error {err:.3g} of range {span:.3g}", description)
        detail = f"max error {err:.3g} > 0.1% of the output range {span:.3g}"
        whole = len(programs) == 1 and not ex.spinnaker_offload.host
        if whole:
            (program,) = programs.values()
            bound = np.asarray(program.error_bound).reshape(1, -1)
            # inputs beyond the calibrated range void the bound's premise
            inside = np.abs(x).reshape(len(x), -1).max(1) <= np.abs(calib).max()
            if np.all(np.abs(y - ref).reshape(len(x), -1)[inside] <= bound + 1e-6):
                return Verdict("imprecise", f"{detail}, inside the stated bound {float(bound.max()):.3g}",
                               description)
        return Verdict("wrong", detail, description)
    except tvm_spinn.SpinnakerError as exc:
        return Verdict("clear error", f"{type(exc).__name__}: {exc}", description)
    except Exception as exc:  # noqa: BLE001 - the point is to catch every raw exception
        return Verdict("raw exception", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=4)}",
                       description)
