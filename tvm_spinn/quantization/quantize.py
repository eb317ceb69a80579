"""The one quantiser: an operator graph and calibration data -> the graph in int16 fixed point.

Scales follow :mod:`.fixed_point`: int16 activations with one scale per tensor (from
calibration: ``max|x| / 32767``; tanh and sigmoid outputs use 1/32767), int16 weights
with one scale per output channel (dense: per output row), exact int64 accumulation,
integer requantisation. Pooling and flatten keep their input's scale; a residual add
rescales both inputs to its output scale with integer multipliers and one shift.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import CalibrationError, UnsupportedError
from ..graph.network import OpGraph, Shape, float_forward, graph_input, input_number, op_inputs, shapes
from ..graph.ops import Add, Concat, Conv2D, DenseLayer, Flatten, Op, Pool2D
from . import input_format
from .fixed_point import (ACT_CODES, Q_MAX, TANH_INPUT_BITS, activation_params, add_multipliers, quantize_weights,
                          symmetric_scale)

log = logging.getLogger(__name__)



@dataclass
class QOp:
    """One op in int16 fixed point.

    op: the float op (geometry, float weights). inputs: op indices (negative: graph inputs,
    see :func:`tvm_spinn.graph.network.graph_input`). in_scales: the scale of each input;
    out_scale: of the output (float, value = int16 * scale).

    Dense / Conv2D: weight int16 (out, in) or (out, in / groups, kh, kw), weight_scale
    float64 (out,), bias int64 (out,) in accumulator units, multiplier and shift int64
    (out,), target_scale (the scale requantisation targets; differs from out_scale before
    tanh / sigmoid), acc_bound (largest |acc| for any int16 input) and m_bits (bits of
    the multiplier). Add: multiplier (2,) and shift (1,) rescaling a and b to target_scale.

    split, partial_shift: how tiling cut the accumulation (None: not cut). Bounds along the
    reduction's outer axis (dense: input features; conv: input channels); every part's
    partial sum is rounded by partial_shift bits before the parts are added.
    """

    op: Op
    inputs: Tuple[int, ...]
    in_shapes: List[Shape]
    out_shape: Shape
    in_scales: List[float]
    out_scale: float
    weight: Optional[np.ndarray] = None
    weight_scale: Optional[np.ndarray] = None
    bias: Optional[np.ndarray] = None
    multiplier: Optional[np.ndarray] = None
    shift: Optional[np.ndarray] = None
    target_scale: float = 0.0
    acc_bound: int = 0
    m_bits: int = 0
    split: Optional[List[int]] = None
    partial_shift: int = 0
    act_params: Optional[np.ndarray] = None  # int64: clip (lo, hi) in output steps; leaky relu (m, s)

    @property
    def name(self) -> str:
        return self.op.name

    @property
    def kind(self) -> str:
        """The op's class name: DenseLayer, Conv2D, Pool2D, Add or Flatten."""
        return type(self.op).__name__

    @property
    def activation(self) -> str:
        return getattr(self.op, "activation", "none")

    @property
    def act_code(self) -> int:
        return ACT_CODES[self.activation]

    @property
    def in_scale(self) -> float:
        return self.in_scales[0]

    @property
    def n_splits(self) -> int:
        """Parts the accumulation is cut into (1: not cut)."""
        return 1 if self.split is None else len(self.split) - 1

    def with_split(self, split: Optional[Sequence[int]], partial_shift: int) -> "QOp":
        """This op with its accumulation cut at ``split`` (None or one part: not cut)."""
        if split is not None and len(split) <= 2:
            split, partial_shift = None, 0
        return replace(self, split=None if split is None else [int(b) for b in split],
                       partial_shift=int(partial_shift))


@dataclass
class QuantizedGraph:
    """An operator graph in int16: per input its (C, H, W), scale, calibrated max |x| and
    format (:mod:`.input_format` name: "int16", or 8-bit "int8" / "uint8", whose values the
    graph takes as int16); outputs: indices of the ops the graph returns."""

    ops: List[QOp]
    input_shapes: List[Shape]
    input_scales: List[float]
    input_max_abs: List[float]
    outputs: List[int]
    name: str = ""
    input_formats: List[str] = field(default_factory=list)

    def input_format(self, k: int = 0) -> input_format.InputFormat:
        """The format of input k (int16 when none was recorded)."""
        names = {f.name: f for f in input_format.FORMATS.values()}
        return names[self.input_formats[k]] if k < len(self.input_formats) else input_format.INT16

    @property
    def input_shape(self) -> Shape:
        return self.input_shapes[0]

    @property
    def input_scale(self) -> float:
        return self.input_scales[0]

    @property
    def output_scale(self) -> float:
        return self.ops[self.outputs[0]].out_scale

    def quantize_input(self, x: np.ndarray, k: int = 0) -> np.ndarray:
        """float32 samples of input k -> int16 at the input's scale, saturated to its format:
        (n, N) for a vector input given as (n, N), else (n, C, H, W)."""
        x = np.asarray(x)
        shape = tuple(self.input_shapes[k])
        if not (shape[:2] == (1, 1) and x.ndim == 2):
            x = x.reshape((-1,) + shape)
        return self.input_format(k).quantize(x, self.input_scales[k])


# An 8-bit input whose calibration values lie farther than this from its grid (in steps) is
# not 8-bit data (pixels k / 255 in float32 lie within 1e-4 steps of it): the build warns.
OFF_GRID_STEPS = 0.01


@dataclass(frozen=True)
class CalibrationSettings:
    """How a tensor's int16 range comes from its calibration values: the ``percentile`` of
    |x| over every calibration value (100: the maximum) times ``headroom``.

    The default headroom of 2 (one bit) keeps fresh samples of the calibration's
    distribution from saturating (values a little beyond the calibration set, which a
    scale at exactly the calibrated maximum clips); it costs one bit of int16 precision,
    which doubles the rounding error of every tensor (measured in the README)."""

    headroom: float = 2.0
    percentile: float = 100.0
    # bits of each graph input on the host link (16, or 8: .input_format, no headroom)
    input_bits: int = 16

    def __post_init__(self) -> None:
        if self.input_bits not in input_format.INPUT_BITS:
            raise CalibrationError(f"input_bits must be one of {input_format.INPUT_BITS}, got {self.input_bits!r}")
        if not (self.headroom >= 1.0 and np.isfinite(self.headroom)):
            raise CalibrationError(f"headroom must be a finite number >= 1, got {self.headroom}")
        if not 0.0 < self.percentile <= 100.0:
            raise CalibrationError(f"percentile must be in (0, 100], got {self.percentile}")

    def range_of(self, values: np.ndarray) -> float:
        """The largest |value| the tensor's int16 scale holds."""
        a = np.abs(np.asarray(values, np.float64))
        stat = float(a.max()) if self.percentile >= 100.0 else float(np.percentile(a, self.percentile))
        return stat * self.headroom

    def input_range(self, values: np.ndarray) -> float:
        """The largest |value| an 8-bit input's scale holds: range_of without the headroom
        (8-bit data is bounded by its format; see .input_format)."""
        return replace(self, headroom=1.0).range_of(values)


def _calibration_arrays(graph: OpGraph, calibration) -> List[np.ndarray]:
    """Calibration (one array, or one per input) as float32 (samples, C, H, W) arrays."""
    if calibration is None:
        raise CalibrationError("SpiNNaker needs calibration data to choose int16 scales: pass calibration=<array "
                               "of representative inputs, first axis = samples>")
    arrays = [calibration] if isinstance(calibration, np.ndarray) or len(graph.input_shapes) == 1 \
        and not isinstance(calibration, (list, tuple)) else list(calibration)
    if len(arrays) != len(graph.input_shapes):
        raise CalibrationError(f"calibration has {len(arrays)} arrays for {len(graph.input_shapes)} inputs")
    first = graph.ops[0].name if graph.ops else graph.name
    result = []
    for x, shape in zip(arrays, graph.input_shapes):
        x = np.asarray(x, np.float32)
        n_values = int(np.prod(shape))
        if x.ndim < 2 or x.shape[0] == 0 or int(np.prod(x.shape[1:])) != n_values:
            want = (n_values,) if shape[:2] == (1, 1) else shape
            raise CalibrationError(f"calibration data for {first} must have shape (samples, "
                                   f"{', '.join(map(str, want))}), got {tuple(x.shape)}")
        if not np.all(np.isfinite(x)):
            raise CalibrationError("calibration data contains NaN or infinity")
        result.append(x.reshape((-1,) + tuple(shape)))
    return result


def _shared_ranges(graph: OpGraph, xs: List[np.ndarray], outs: List[np.ndarray],
                   settings: CalibrationSettings) -> Dict[int, float]:
    """The int16 range every tensor that a concat joins must share (a concat is a view: its
    operands reach its readers with one scale), by tensor index (negative: a graph input).

    Tensors are grouped through concats and the ops that keep their input's scale (pool,
    flatten); a group holding a tanh / sigmoid output takes its fixed range 1. Raises
    UnsupportedError when such a group must also hold values beyond +-1."""
    parent: Dict[int, int] = {}

    def find(a: int) -> int:
        while parent.setdefault(a, a) != a:
            a = parent[a]
        return a

    for i, op in enumerate(graph.ops):
        if isinstance(op, (Concat, Pool2D, Flatten)):
            for j in op_inputs(graph.ops, i):
                parent[find(j)] = find(i)
    groups: Dict[int, List[int]] = {}
    for t in list(parent):
        groups.setdefault(find(t), []).append(t)
    shared: Dict[int, float] = {}
    for members in groups.values():
        if not any(isinstance(graph.ops[t], Concat) for t in members if t >= 0):
            continue
        fixed = [t for t in members if t >= 0 and getattr(graph.ops[t], "activation", "none") in ("tanh", "sigmoid")]
        values = [xs[input_number(t)] if t < 0 else outs[t] for t in members]
        span = max(settings.range_of(v) for v in values)
        if fixed:
            if max(float(np.max(np.abs(v))) for v in values) > 1.0:
                raise UnsupportedError(f"{graph.ops[fixed[0]].name}: a concat joins its tanh / sigmoid output "
                                       "with values beyond +-1, which one int16 scale cannot hold exactly")
            span = 1.0
        shared.update({t: span for t in members})
    return shared


def quantize_graph(graph: OpGraph, calibration, settings: CalibrationSettings = CalibrationSettings()
                   ) -> QuantizedGraph:
    """Scales from calibration data and int16 parameters of every op.

    calibration: float array (samples, *input shape, or flat per sample) of the graph's
    input, or a list of such arrays, one per input. settings: headroom and percentile.
    Raises CalibrationError (missing, wrong shape, NaN) or ResourceError (a requantisation
    that cannot be exact in int64).
    """
    xs = _calibration_arrays(graph, calibration)
    outs = float_forward(graph.ops, xs)
    all_shapes = shapes(graph.ops, graph.input_shapes)
    input_max = [float(np.max(np.abs(x))) for x in xs]
    shared = _shared_ranges(graph, xs, outs, settings)
    formats, input_scales = [], []
    for k, x in enumerate(xs):
        fmt = input_format.choose(settings.input_bits, x)
        if fmt is not input_format.INT16 and graph_input(k) in shared:
            log.warning("%s: input %d stays int16 on the host link (input_bits=8): a concat joins it with "
                        "other tensors, which share its scale", graph.name or "offloaded function", k)
            fmt = input_format.INT16
        formats.append(fmt.name)
        input_scales.append(symmetric_scale(shared.get(graph_input(k), settings.range_of(x))) if fmt is
                            input_format.INT16 else fmt.scale(settings.input_range(x)))
        if fmt is not input_format.INT16 and fmt.off_grid(x, input_scales[-1]) > OFF_GRID_STEPS:
            log.warning("%s: input %d is not 8-bit data, and input_bits=8 rounds it to %s steps of %.3g (1/%d of "
                        "its calibrated range, up to half a step per value); input_bits=16 keeps it int16",
                        graph.name or "offloaded function", k, fmt.name, input_scales[-1], fmt.q_max)
    qops: List[QOp] = []
    for i, op in enumerate(graph.ops):
        ins = op_inputs(graph.ops, i)
        in_scales = [input_scales[input_number(j)] if j < 0 else qops[j].out_scale for j in ins]
        in_shapes = [tuple(graph.input_shapes[input_number(j)]) if j < 0 else all_shapes[j] for j in ins]
        q = QOp(op, ins, in_shapes, all_shapes[i], in_scales, in_scales[0])
        if isinstance(op, (Conv2D, DenseLayer)):
            for key, value in quantize_weights(op.weight, op.bias, op.activation, in_scales[0],
                                               shared.get(i, settings.range_of(outs[i])), op.name).items():
                setattr(q, key, value)
        elif isinstance(op, Add):
            if op.activation in ("tanh", "sigmoid"):  # rescale to the table's input, Q3.12 of x or x / 2
                q.target_scale = 2.0 ** -(TANH_INPUT_BITS - (op.activation == "sigmoid"))
                q.out_scale = 1.0 / Q_MAX
            else:
                q.out_scale = q.target_scale = symmetric_scale(shared.get(i, settings.range_of(outs[i])))
            q.multiplier, q.shift = add_multipliers(in_scales[0], in_scales[1], q.target_scale)
        elif isinstance(op, Concat) and len(set(in_scales)) != 1:  # cannot happen: _shared_ranges
            raise UnsupportedError(f"{op.name}: operands of different scales {in_scales}")
        elif not isinstance(op, (Pool2D, Flatten, Concat)):
            raise TypeError(f"unknown op {type(op).__name__}")
        if getattr(op, "activation", "none") in ("clip", "leaky_relu"):
            q.act_params = activation_params(op.activation, op.act_params, q.out_scale)
        qops.append(q)
    for o in dict.fromkeys(graph.outputs):
        _warn_coarse(qops[o], outs[o])
    return QuantizedGraph(qops, [tuple(s) for s in graph.input_shapes], input_scales, input_max,
                          list(graph.outputs), graph.name, formats)


def _warn_coarse(q: QOp, y: np.ndarray) -> None:
    """Say so when a result's calibrated values span less than 1000 int16 steps: they sit far
    from zero (one symmetric scale per tensor, no zero point) or, after tanh / sigmoid (whose
    scale is fixed at 1/32767), barely move; errors of a step are then more than 0.1% of
    what the result varies by."""
    span = float(np.max(y) - np.min(y)) if y.size else 0.0
    step = q.out_scale * (3.0 if q.activation in ("tanh", "sigmoid") else 1.0)  # + the table's error
    if span > 0 and step > 1e-3 * span:
        log.warning("%s: its calibrated values vary by %.3g but one int16 step is %.3g (%.2f%% of that): "
                    "expect errors of that order (int16 holds one symmetric scale per tensor%s)", q.name, span,
                    step, 100 * step / span, "; tanh / sigmoid outputs are fixed at 1/32767"
                    if q.activation in ("tanh", "sigmoid") else ": values far from zero lose precision")
