"""Copies of a model on the boards of a machine of several boards: which chip each vertex
must sit on (the toolchain then places it there, PACMAN's fixed location).

PACMAN 7.4.1 has no "place on this board" constraint, only a fixed chip (and optionally
core) per vertex (``AbstractVertex.set_fixed_location``; its placer places fixed vertices
first). So each copy's vertices are pinned to chips of the copy's own board: its live
inputs on the board's Ethernet chip (the host sends them in through that board's
Ethernet), its kernels on the board's chips nearest that chip, in the machine graph's
order (machine.builder's placement order: by the rows each kernel sends, as the
toolchain's own placer would fill chips). The toolchain still picks the cores, routes and
allocates keys.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from ...tiling import resources as res
from ..graph import INPUT, OUTPUT, MachineGraphSpec

Chip = Tuple[int, int]


def board_chips(board: res.Board, b: int) -> List[Chip]:
    """The chips of board ``b`` (index into board.ethernet_chips), nearest its Ethernet chip
    first (hops on the chip grid's six links; ties by row, then column)."""
    ex, ey = board.ethernet_chips[b]
    # a chip's position relative to its board's Ethernet chip is (dx, dy) >= 0 on a SpiNN-5,
    # where the hop distance over the E / NE / N links is max(dx, dy)
    rel = sorted(res.SPINN5_CHIPS, key=lambda d: (max(d), d[1], d[0]))
    return [((ex + dx) % board.width, (ey + dy) % board.height) for dx, dy in rel]


def fixed_chips(spec: MachineGraphSpec, cores: Dict[Chip, int]) -> Tuple[Dict[str, Chip], str]:
    """The chip of every vertex of ``spec`` with a board (``spec.board_of``), and of the
    output gatherer (board 0's Ethernet chip, where its IP tag is); ``cores``: application
    cores of each chip of the machine. Returns ({}, why) when a board cannot hold its copies
    (the toolchain then places every vertex itself), else (chips, "")."""
    if not spec.board_of:
        return {}, ""
    board = res.machine_of(spec.board_version, spec.boards)
    free = dict(cores)
    out: Dict[str, Chip] = {}
    # the order the chips fill in: a board's inputs, then its kernels in the graph's order
    by_board: Dict[int, Tuple[List[str], List[str]]] = {}
    for v in spec.vertices:
        if v.kind == OUTPUT:
            free[board.ethernet_chips[0]] -= 1
            out[v.label] = board.ethernet_chips[0]
        elif v.label in spec.board_of:
            inputs, kernels = by_board.setdefault(spec.board_of[v.label], ([], []))
            (inputs if v.kind == INPUT else kernels).append(v.label)
    for b, (inputs, kernels) in sorted(by_board.items()):
        if not 0 <= b < board.boards:
            raise ValueError(f"board {b} of a machine of {board.boards} boards")
        chips = iter(board_chips(board, b))
        chip = next(chips)
        for label in inputs + kernels:
            while free.get(chip, 0) <= 0:
                chip = next(chips, None)
                if chip is None:
                    need = len(inputs) + len(kernels)
                    have = sum(cores.get(c, 0) for c in board_chips(board, b))
                    return {}, (f"the copies on board {b} need {need} cores, the board has {have} "
                                "application cores (less the output gatherer's on board 0)")
            free[chip] -= 1
            out[label] = chip
    return out, ""
