"""The board program's dataclasses (see :mod:`tvm_spinn.program`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..machine.graph import CoreImage, IPTagSpec
from ..quantization.input_format import InputFormat, of_packing
from ..quantization.quantize import QOp

Chip = Tuple[int, int]
Placement = Tuple[int, int, int]  # (x, y, p)


@dataclass
class CoreProgram:
    """One kernel core. kind: the emulator's core kind (``spinn_emulator.h`` CORE_*);
    config: uint32 words of its config region exactly as the toolchain wrote them (after the
    region's header). lost_bit: the key bit of its lost-value markers (header word 4).
    send_gap, send_phase: cycles it leaves at least between two packets it sends, and waits
    at its first send after being idle (header word 5; machine.send_gaps)."""

    label: str
    kind: int
    placement: Placement
    config: np.ndarray
    lost_bit: int = 0
    send_gap: int = 0
    send_phase: int = 0


@dataclass
class InputEnd:
    """A live input: samples enter at chip ``chip`` with keys
    ``key | slot << slot_shift | c << c_shift | h << h_shift | pair`` of a (C, H, W) tensor
    ``shape`` (c-major); shape None: a plain vector of in_features values (C = H = 1).
    A graph input whose rows go to different cores is cut into blocks, one live input each
    (machine.builder): ``shape`` is then the block, at channel and row ``origin`` of
    argument ``arg``'s (C, H, W) ``tensor`` (None: the block is the whole argument).
    ``replica``: the copy of the function it feeds (BoardProgram.replicas). ``packing``: how
    its values travel (quantization.input_format PACK_*: 0 two int16 a packet, 1 / 2 four
    int8 / uint8, the pair field then counting quads)."""

    chip: Chip
    key: int
    slot_shift: int
    c_shift: int = 0
    h_shift: int = 0
    shape: Optional[Tuple[int, int, int]] = None
    label: str = ""  # its live input vertex (a core on a real board: BoardProgram.images)
    tensor: Optional[Tuple[int, int, int]] = None
    origin: Tuple[int, int] = (0, 0)
    arg: int = 0
    replica: int = 0
    packing: int = 0

    @property
    def format(self) -> InputFormat:
        """The format its values travel in (int16, int8, uint8)."""
        return of_packing(self.packing)

    def packets(self, in_features: int = 0) -> int:
        """Packets of one sample through this live input (each row's last one padded);
        ``in_features``: the length of a plain vector input (shape None)."""
        c, h, w = self.shape if self.shape is not None else (1, 1, in_features)
        return c * h * self.format.packets(w)


@dataclass
class OutputEnd:
    """The live output gatherer at ``placement`` and its receive table ``rx`` (uint32):
    5-word ``spinn_rx.h`` entries, or with ``trx`` 16-word ``spinn_tensor.h`` entries whose
    dst block is the whole output tensor (c-major)."""

    placement: Placement
    rx: np.ndarray
    trx: bool = False


@dataclass
class LayerSummary:
    """How one op was put on the board (for reports): tiles rows x columns (dense: row x
    column tiles; tensor ops: output blocks x input-channel groups), cores, and the op whose
    tiles compute it (a fused pool)."""

    name: str
    kind: str
    in_features: int
    out_features: int
    activation: str
    row_tiles: int
    col_tiles: int
    cores: int
    fused_into: Optional[str] = None
    # One entry per kernel tile: (a0, na, b0, nb, g0, ng) on the axes ``tile_axes``: dense,
    # weight rows (output features) x columns (input features); tensor ops, output channels x
    # output rows, with [g0, g0 + ng) the input-channel group of a convolution cut by input
    # channels (ng 0: not cut). Empty for programs stored without it, and for fused pools.
    tiles: List[Tuple[int, int, int, int, int, int]] = field(default_factory=list)
    tile_axes: Tuple[str, str] = ("", "")


@dataclass
class BoardProgram:
    """The compiled program of one offloaded function (one ``"spinnaker"`` runtime module).

    symbol: the function's global symbol. board: the board's name. inputs: one live input
    per argument; a sample on the board is every input's values one after the other
    (in_features in all), and the output gatherer decodes every distinct result into one
    flat vector (out_features). arg_shapes / result_shapes: one sample of each argument and
    result as the caller sees it (without the batch axis); result_offsets: where each result
    starts in the decoded vector. input_scales: int16 * scale = value (output_scales, derived:
    the result ops' scales).
    calls_per_inference: call sites of the function in ``main`` (statistics add them up).
    ops: the quantised graph with tiling's cuts (:func:`tvm_spinn.integer_reference`),
    outputs: its result op indices (input_shapes, derived: the live inputs' (C, H, W)).
    error_bound: worst-case |result - float32| per output value for inputs inside the
    calibrated range. n_cores: kernel cores + the 2 live IO cores. board_functions: the
    symbols of every function mapped together on the same board, in the order main calls them.
    """

    # what the board (emulator) needs
    chips: List[Chip]
    links: Dict[Tuple[int, int, int], Chip]
    routing_tables: Dict[Chip, np.ndarray]
    cores: List[CoreProgram]
    inputs: List[InputEnd]
    output: OutputEnd
    in_features: int
    out_features: int
    n_slots: int
    # what the executor, the integer reference, statistics and reports need
    symbol: str = ""
    board: str = ""
    arg_shapes: List[Tuple[int, ...]] = field(default_factory=list)
    input_scales: List[float] = field(default_factory=list)
    result_shapes: List[Tuple[int, ...]] = field(default_factory=list)
    result_offsets: List[int] = field(default_factory=list)
    calls_per_inference: int = 1
    ops: List[QOp] = field(default_factory=list)
    outputs: List[int] = field(default_factory=list)
    layers: List[LayerSummary] = field(default_factory=list)
    error_bound: np.ndarray = field(default_factory=lambda: np.zeros(0))
    placements: Dict[str, Placement] = field(default_factory=dict)
    mapping_seconds: float = 0.0
    board_functions: List[str] = field(default_factory=list)
    n_cores: int = 0
    # What a real board loads (tvm_spinn.runtime.board): every core's binary and data-spec
    # regions (kernel config regions rebuilt from ``cores``), the IP tags, the app id.
    images: List[CoreImage] = field(default_factory=list)
    iptags: List[IPTagSpec] = field(default_factory=list)
    app_id: int = 0
    # How reports and errors name the function: "function 2 (features.3 .. head)" (run order).
    title: str = ""
    # Copies of the function on the board (tvm_spinn.build(replicas=...)): the board takes
    # `replicas` samples at a time, one per copy, as one sample of replicas * in_features
    # values (copy after copy), and returns replicas * out_features values. in_features and
    # out_features stay those of one sample.
    replicas: int = 1
    # The inputs of the model's main (name, dtype, shape; a symbolic dimension negative, one
    # number per variable), so that every VM of the module, exported and loaded or not, checks
    # and converts its inputs (tvm_spinn.runtime.vm_guard). Empty: not stored (older payloads).
    main_inputs: List[Tuple[str, str, Tuple[int, ...]]] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The function's readable name (its title; the symbol for programs stored without one)."""
        return self.title or self.symbol

    @property
    def run_order(self) -> int:
        """Position of the function among those mapped together: the order main calls them."""
        return self.board_functions.index(self.symbol) if self.symbol in self.board_functions else 0

    @property
    def input(self) -> InputEnd:
        """The first (usually only) live input."""
        return self.inputs[0]

    @property
    def input_scale(self) -> float:
        return self.input_scales[0]

    @property
    def output_scales(self) -> List[float]:
        """int16 * scale = value of each result."""
        return [self.ops[o].out_scale for o in self.outputs]

    @property
    def output_scale(self) -> float:
        return self.output_scales[0]

    @property
    def input_shapes(self) -> List[Tuple[int, int, int]]:
        """(C, H, W) of each input (argument) of the graph."""
        shapes: Dict[int, Tuple[int, int, int]] = {}
        for inp in self.inputs:
            whole = inp.tensor or inp.shape
            shapes.setdefault(inp.arg, tuple(whole) if whole is not None else (1, 1, self.in_features))
        return [shapes[k] for k in sorted(shapes)]

    def arg_format(self, k: int) -> InputFormat:
        """The format of argument k's values on the host link (its live inputs share it)."""
        return next((inp.format for inp in self.inputs if inp.arg == k), of_packing(0))

    def quantize_args(self, xs: List[np.ndarray]) -> Tuple[np.ndarray, int]:
        """float (batch, ...) arguments -> (the int16 values the board takes (batch,
        in_features), arguments one after the other, c-major; how many values saturated),
        each argument at its scale and in its format (8-bit input: int16 in its range)."""
        flat = [np.asarray(x).reshape(np.shape(x)[0], -1) for x in xs]
        fmts = [self.arg_format(k) for k in range(len(flat))]
        x_q = np.concatenate([f.quantize(x, sc) for x, sc, f in zip(flat, self.input_scales, fmts)], axis=1)
        return x_q, sum(f.saturated(x, sc) for x, sc, f in zip(flat, self.input_scales, fmts))

    def input_packets(self) -> int:
        """Packets (EIEIO key + payload events) the host sends per sample: half as many for
        8-bit input."""
        return sum(inp.packets(self.in_features) for inp in self.inputs) // max(1, self.replicas)

    def input_gather(self) -> Optional[np.ndarray]:
        """Where each value the live inputs send, input after input (each block c-major),
        sits in what the board takes at a time (``replicas`` samples one after the other, each
        the arguments' values one after the other, c-major): int64 indices
        (replicas * in_features,), or None when the two orders are the same."""
        if any(inp.shape is None for inp in self.inputs):  # a plain vector (hand-made programs)
            return None
        starts = np.concatenate([[0], np.cumsum([int(np.prod(s)) for s in self.input_shapes])])
        parts = []
        for inp in self.inputs:
            c, h, w = inp.shape
            _, th, tw = inp.tensor or inp.shape
            c0, h0 = inp.origin
            rows = ((np.arange(c0, c0 + c)[:, None] * th + np.arange(h0, h0 + h)[None, :]) * tw).reshape(-1)
            parts.append(inp.replica * self.in_features + starts[inp.arg]
                         + (rows[:, None] + np.arange(w)[None, :]).reshape(-1))
        order = np.concatenate(parts).astype(np.int64)
        return None if np.array_equal(order, np.arange(order.size)) else order

