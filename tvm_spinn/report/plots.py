"""Plots of a build and a run: where the layers sit on the board and what the links carry
(:func:`plot_placement`), per-layer cycles, packets and utilisation (:func:`plot_layers`),
the tiles of one layer (:func:`plot_tiling`), and all of them as files (:func:`save_plots`).

Every function returns a :class:`matplotlib.figure.Figure` made without pyplot (no
display, no global figure state; Agg renders it) and, given ``path``, also saves it there
(the suffix chooses the format: ``.png``, ``.svg``, ``.pdf``). Layers are named as the
user's model names them (``features.3``). Counts (cores, packets) are counted by the
emulator; cycles and utilisation are modelled (see :mod:`tvm_spinn.runtime.stats`).
"""
from __future__ import annotations

import os
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from matplotlib.collections import LineCollection, PatchCollection
from matplotlib.colors import Normalize, to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from ..program import BoardProgram, LayerSummary
from ..runtime.executor import statistics
from ..runtime.stats import RunStatistics, core_layers
from .source import programs

CORES_PER_CHIP = 18
_IO_COLOUR, _MONITOR_COLOUR, _FREE_COLOUR = "#444444", "#bbbbbb", "#f2f2f2"
# A chip's square (chips sit 1 apart, the links in the gaps); a link's line is drawn this far
# off the chip centres' line, per direction, so that the two directions of a link show apart.
_CHIP = 0.64
_LINK_SIDE = 0.07


def _programs(obj: Any) -> List[BoardProgram]:
    found = programs(obj)
    if not found:
        raise ValueError("nothing of this model is offloaded to SpiNNaker: there is no placement or tiling to plot")
    return found


def _short(name: str) -> str:
    """A layer's short name: its module path ("features.3") or kind and number ("conv2d #2")."""
    return name.split(" (")[0]


def layer_colours(names: Sequence[str]) -> Dict[str, Tuple[float, float, float, float]]:
    """A distinguishable colour per layer name: tab10 up to 10 layers, tab20 up to 20, then
    evenly spaced hues."""
    from matplotlib import colormaps

    n = len(names)
    if n <= 10:
        cmap, values = colormaps["tab10"], [k / 10 + 0.05 for k in range(n)]
    elif n <= 20:
        cmap, values = colormaps["tab20"], [k / 20 + 0.025 for k in range(n)]
    else:
        cmap, values = colormaps["hsv"], list(np.linspace(0, 1, n, endpoint=False))
    return {name: cmap(v) for name, v in zip(names, values)}


def _finish(fig: Figure, path: Optional[Union[str, os.PathLike]]) -> Figure:
    if path is not None:
        fig.savefig(os.fspath(path), dpi=100)
    return fig


def _stats(obj: Any) -> Optional[RunStatistics]:
    """The last call's statistics of ``obj`` (a VM that ran), or ``obj`` itself if it is some."""
    if isinstance(obj, RunStatistics):
        return obj
    try:
        return statistics(obj)
    except Exception:  # an executable that no VM has linked: nothing ran
        return None


def _ordered_layers(progs: List[BoardProgram]) -> List[LayerSummary]:
    return [lay for p in progs for lay in p.layers]


def placement_data(obj: Any) -> dict:
    """What :func:`plot_placement` draws, as plain data: ``chips`` [(x, y)], ``cores``
    {(x, y, p): layer name or "live IO"}, ``layers`` (names in run order, those on cores),
    ``links`` {(x, y, link): ((x, y), (x2, y2), packets per sample)} of the last call."""
    progs = _programs(obj)
    # Functions mapped together share one placement (every program holds all of it).
    names = {label: name for p in progs for label, name in core_layers(p).items()}
    places = {label: place for p in progs for label, place in p.placements.items()}
    cores = {tuple(int(v) for v in place): names.get(label, "live IO") for label, place in places.items()}
    used = set(cores.values())
    layers = [lay.name for lay in _ordered_layers(progs) if lay.name in used]
    stats = _stats(obj)
    links = {}
    board_links = progs[0].links
    n = max(1, stats.samples) if stats is not None else 1
    for key, count in (stats.link_packets if stats is not None else {}).items():
        (x, y), link = (int(v) for v in key.split(":")[0].split(",")), int(key.split(":")[1])
        if (x, y, link) in board_links:
            links[(x, y, link)] = ((x, y), tuple(board_links[(x, y, link)]), count / n)
    return {"chips": [tuple(c) for c in progs[0].chips], "cores": cores, "layers": layers, "links": links,
            "board": progs[0].board, "ran": stats is not None}


def plot_placement(obj: Any, path: Optional[Union[str, os.PathLike]] = None) -> Figure:
    """The board's chips and their 18 cores, each core coloured by the layer it computes
    (live IO cores dark grey, the monitor core 0 light grey), and the chip-to-chip links
    coloured and thickened by the packets per sample they carried in the last call.

    obj: an executable, VM or module (link load only after a VM ran a call). Only the chips
    that hold a core of the model or carry its packets are drawn. Returns the Figure; with
    ``path``, also saved there (PNG, SVG, ... by the suffix). Raises ValueError when nothing
    of the model is offloaded."""
    data = placement_data(obj)
    used_chips = {(x, y) for x, y, _ in data["cores"]}
    for a, b, _ in data["links"].values():
        used_chips |= {tuple(a), tuple(b)}
    chips = [c for c in data["chips"] if c in used_chips]
    colours = layer_colours(data["layers"])
    xs, ys = [c[0] for c in chips], [c[1] for c in chips]
    width = max(xs) - min(xs) + 1
    height = max(ys) - min(ys) + 1
    fig = Figure(figsize=(min(5.0 + 1.9 * width, 16.0), min(1.2 + 1.9 * height, 12.0)), layout="constrained")
    ax = fig.add_subplot()
    cells, faces = [], []
    half = _CHIP / 2
    for x, y in chips:  # a chip: a square of 3 rows x 6 cores, core 0 top left
        for p in range(CORES_PER_CHIP):
            row, col = divmod(p, 6)
            cells.append(Rectangle((x - half + col * _CHIP / 6, y + half - (row + 1) * _CHIP / 3), _CHIP / 6,
                                   _CHIP / 3))
            name = data["cores"].get((x, y, p))
            faces.append(colours[name] if name in colours else _IO_COLOUR if name else
                         _MONITOR_COLOUR if p == 0 else _FREE_COLOUR)
        # top left: the one corner no link line passes (E, N, W, S lines meet the sides' middles,
        # NE and SW the other corners)
        ax.text(x - half, y + half + 0.02, f"chip {x},{y}", ha="left", va="bottom", fontsize=8)
    ax.add_collection(PatchCollection(cells, facecolors=faces, edgecolors="white", linewidths=0.6))
    loads = [v[2] for v in data["links"].values()]
    if loads:
        norm = Normalize(0, max(loads))
        from matplotlib import colormaps

        cmap = colormaps["inferno_r"]
        segments, widths, line_colours = [], [], []
        for (a, b, load) in data["links"].values():
            d = np.subtract(b, a).astype(float)  # from chip edge to chip edge, in the gap
            side = np.array([-d[1], d[0]]) / (np.hypot(*d) or 1.0) * _LINK_SIDE
            start, end = np.add(a, d * (half + 0.03)) + side, np.subtract(b, d * (half + 0.03)) + side
            segments.append([start, end])
            widths.append(1.5 + 4.5 * norm(load))
            line_colours.append(cmap(0.25 + 0.75 * norm(load)))
        ax.add_collection(LineCollection(segments, linewidths=widths, colors=line_colours, capstyle="round"))
        from matplotlib.cm import ScalarMappable

        bar = fig.colorbar(ScalarMappable(norm, cmap), ax=ax, shrink=0.5, pad=0.02, aspect=15)
        bar.set_label("packets per sample on the link (counted)")
    ax.set_xlim(min(xs) - 0.5, max(xs) + 0.5)
    ax.set_ylim(min(ys) - 0.5, max(ys) + 0.55)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    handles = [Patch(facecolor=colours[n], label=n) for n in data["layers"]]
    handles += [Patch(facecolor=_IO_COLOUR, label="live IO"), Patch(facecolor=_MONITOR_COLOUR, label="monitor"),
                Patch(facecolor=_FREE_COLOUR, edgecolor="#cccccc", label="free")]
    fig.legend(handles=handles, loc="outside right upper", fontsize=8, frameon=False)
    n_cores = sum(1 for v in data["cores"].values())
    load_note = "" if data["ran"] else " (no call yet: no link load)"
    n_chips = len({c[:2] for c in data["cores"]})
    ax.set_title(f"{data['board']}: {n_cores} cores on {n_chips} chip{'s' if n_chips != 1 else ''}{load_note}",
                 fontsize=10)
    return _finish(fig, path)


def layer_data(obj: Any) -> dict:
    """What :func:`plot_layers` draws: per stage (a layer, or its reducers "... reduce") in
    run order, ``cycles`` (modelled, slowest core, per sample), ``packets`` (counted, per
    sample) and ``utilisation`` (modelled by the timed run: (mean, max) busy share of its
    cores; None with timing off). Raises ValueError before any call."""
    stats = _stats(obj)
    if stats is None:
        raise ValueError("no statistics yet: run the model once (vm['main'](x)) before plotting per-layer figures")
    order = [lay.name for lay in _ordered_layers(_programs(obj))] if not isinstance(obj, RunStatistics) else []
    stages = list(stats.layer_cycles_per_sample)
    rank = {name: k for k, name in enumerate(order)}
    stages.sort(key=lambda s: (rank.get(s.removesuffix(" reduce"), len(rank)), s.endswith(" reduce")))
    util = {}
    if stats.timed is not None:
        for stage in stages:
            layer, reduce = stage.removesuffix(" reduce"), stage.endswith(" reduce")
            shares = [v for k, v in stats.timed.utilisation.items() if k.startswith("core ")
                      and stats.core_layers.get(k[5:]) == layer and ("_r" in k.rpartition(".")[2]) == reduce]
            util[stage] = (float(np.mean(shares)), float(np.max(shares))) if shares else (0.0, 0.0)
    packets = {s: 0.0 for s in stages}
    for name, value in stats.layer_packets_per_sample.items():
        if name in packets:
            packets[name] += value
    return {"stages": stages, "cycles": [stats.layer_cycles_per_sample[s] for s in stages],
            "packets": [packets[s] for s in stages],
            "utilisation": [util[s] for s in stages] if stats.timed is not None else None}


def plot_layers(obj: Any, path: Optional[Union[str, os.PathLike]] = None) -> Figure:
    """Per layer, in run order: modelled cycles per sample of its slowest core, packets per
    sample its cores sent (counted), and its cores' busy share in the timed run (mean bar,
    max tick; modelled). obj: a VM that ran a call (or its :class:`RunStatistics`). Returns
    the Figure; with ``path`` also saved. Raises ValueError before any call."""
    data = layer_data(obj)
    stages = data["stages"]
    colours = layer_colours([s.removesuffix(" reduce") for s in stages if not s.endswith(" reduce")])
    bar_colours = [colours.get(s.removesuffix(" reduce"), "#888888") for s in stages]
    panels = 3 if data["utilisation"] is not None else 2
    fig = Figure(figsize=(4.0 + 3.2 * panels, 1.2 + 0.38 * len(stages)), layout="constrained")
    axes = fig.subplots(1, panels, sharey=True)
    y = np.arange(len(stages))
    axes[0].barh(y, data["cycles"], color=bar_colours)
    axes[0].set_xlabel("cycles per sample, slowest core (modelled)")
    axes[1].barh(y, data["packets"], color=bar_colours)
    axes[1].set_xlabel("packets sent per sample (counted)")
    if data["utilisation"] is not None:
        mean = [100 * u[0] for u in data["utilisation"]]
        top = [100 * u[1] for u in data["utilisation"]]
        axes[2].barh(y, mean, color=bar_colours, label="mean of its cores")
        axes[2].scatter(top, y, marker="|", s=200, color="black", label="busiest core", zorder=3)
        axes[2].set_xlim(0, 105)
        axes[2].set_xlabel("cores busy, % of the run (modelled)")
        axes[2].legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=2, fontsize=8, frameon=False)
    axes[0].set_yticks(y, stages, fontsize=8)
    axes[0].invert_yaxis()  # the first layer on top
    for ax in axes:
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(axis="x", labelsize=8)
        ax.xaxis.label.set_size(9)
    fig.suptitle("per layer, one call", fontsize=10)
    return _finish(fig, path)


def find_layer(obj: Any, layer: Union[str, int]) -> LayerSummary:
    """The layer named ``layer`` ("features.3", a full name, or its index in run order over
    every offloaded function); ValueError listing the names when there is none."""
    layers = _ordered_layers(_programs(obj))
    if isinstance(layer, (int, np.integer)):
        if not 0 <= int(layer) < len(layers):
            raise ValueError(f"layer index {layer} is out of range: the model has {len(layers)} layers on the board")
        return layers[int(layer)]
    for lay in layers:
        if lay.name == layer or _short(lay.name) == layer:
            return lay
    raise ValueError(f"no layer {layer!r} on the board; its layers: {', '.join(_short(l.name) for l in layers)}")


def plot_tiling(obj: Any, layer: Union[str, int], path: Optional[Union[str, os.PathLike]] = None) -> Figure:
    """How one layer is cut into tiles, one core each: a dense layer's weight matrix (rows:
    output features, columns: input features), a tensor op's output (channels x rows, every
    column); a convolution cut by input channels draws one panel per input-channel group.

    layer: its name ("features.3" or the full name) or index in run order. Returns the
    Figure; with ``path`` also saved. Raises ValueError for an unknown layer, a pool fused
    into the convolution before it (plot that one) and an op on no core (a flatten)."""
    lay = find_layer(obj, layer)
    if lay.fused_into:
        raise ValueError(f"{lay.name} is computed by the tiles of {lay.fused_into}: plot that layer's tiling")
    if not lay.tiles:
        raise ValueError(f"{lay.name} runs on no core of its own (nothing to tile)" if not lay.cores else
                         f"{lay.name}: its program holds no tile geometry (rebuild with this tvm_spinn)")
    groups = sorted({(t[4], t[5]) for t in lay.tiles})
    fig = Figure(figsize=(min(3.0 + 3.6 * len(groups), 16.0), 4.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(groups), squeeze=False)[0])
    rows = max(t[0] + t[1] for t in lay.tiles)
    cols = max(t[2] + t[3] for t in lay.tiles)
    colours = layer_colours([str(k) for k in range(max(len(lay.tiles) // len(groups), 1))])
    for ax, (g0, ng) in zip(axes, groups):
        tiles = [t for t in lay.tiles if (t[4], t[5]) == (g0, ng)]
        patches = [Rectangle((t[2], t[0]), t[3], t[1]) for t in tiles]
        faces = [colours[str(k % len(colours))] for k in range(len(tiles))]
        ax.add_collection(PatchCollection(patches, facecolors=faces, edgecolors="black", linewidths=0.6, alpha=0.85))
        if len(tiles) <= 40:
            for k, t in enumerate(tiles):
                ax.text(t[2] + t[3] / 2, t[0] + t[1] / 2, f"{t[1]}x{t[3]}", ha="center", va="center", fontsize=7)
        ax.set_xlim(0, cols)
        ax.set_ylim(rows, 0)  # row 0 at the top, as a matrix is written
        ax.set_xlabel(lay.tile_axes[1], fontsize=9)
        what = "rows x columns" if lay.kind == "DenseLayer" else "channels x rows"
        ax.set_title((f"input channels {g0}-{g0 + ng - 1}: " if ng else "") + f"{len(tiles)} tiles ({what} each)",
                     fontsize=9)
    axes[0].set_ylabel(lay.tile_axes[0], fontsize=9)
    fig.suptitle(f"{lay.name}: {len(lay.tiles)} tiles on {lay.cores} cores", fontsize=10)
    return _finish(fig, path)


def _file_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "layer"


def save_plots(obj: Any, directory: Union[str, os.PathLike], fmt: str = "png") -> List[str]:
    """Every plot of ``obj`` as files in ``directory`` (created): ``placement.<fmt>``,
    ``layers.<fmt>`` (once a VM ran a call) and ``tiling_<k>_<layer>.<fmt>`` per layer on
    cores of its own. fmt: "png" or "svg" (or any format matplotlib writes). Returns the
    paths written, in that order. Raises ValueError when nothing is offloaded."""
    os.makedirs(directory, exist_ok=True)
    fmt = fmt.lstrip(".").lower()
    written = []

    def save(fig: Figure, name: str) -> None:
        path = os.path.join(os.fspath(directory), f"{name}.{fmt}")
        fig.savefig(path, dpi=100, format=fmt)
        written.append(path)

    save(plot_placement(obj), "placement")
    if _stats(obj) is not None:
        save(plot_layers(obj), "layers")
    for k, lay in enumerate(_ordered_layers(_programs(obj))):
        if lay.tiles and not lay.fused_into:
            save(plot_tiling(obj, k), f"tiling_{k}_{_file_name(_short(lay.name))}")
    return written
