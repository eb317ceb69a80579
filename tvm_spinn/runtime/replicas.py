"""Copies of a function on one machine (``tvm_spinn.build(replicas=N)``): the board takes
N samples at a time, one per copy, as one sample of the copies' values one after the other
(:attr:`tvm_spinn.program.BoardProgram.replicas`). These helpers turn a batch into such
groups and back; the copies then run side by side, each on its own cores, with one host
link and one output gatherer between them.

A last, partial group carries only its live copies (:func:`live_copies`): the copies
without a sample get no input packets and return nothing, and the group is complete when
the live copies' results are in. So a batch that is not a multiple of N costs what its
samples cost (packets, host-link bytes, energy, time), not a whole group's."""
from __future__ import annotations

from typing import List

import numpy as np


def group(x: np.ndarray, replicas: int) -> np.ndarray:
    """(n, f) samples -> (ceil(n / replicas), replicas * f): sample i goes to copy i % replicas
    of group i // replicas. A last, partial group's missing copies hold zeros there; they are
    never sent (:func:`live_copies`) and their results are dropped by :func:`ungroup`."""
    n, f = x.shape
    groups = -(-n // replicas)
    padded = np.zeros((groups * replicas, f), x.dtype)
    padded[:n] = x
    return padded.reshape(groups, replicas * f)


def live_copies(n: int, replicas: int) -> np.ndarray:
    """uint8 (ceil(n / replicas),): the copies that carry a sample in each group of
    :func:`group` (copies 0 .. k - 1): ``replicas`` but for a last, partial group."""
    groups = -(-n // replicas)
    live = np.full(groups, replicas, np.uint8)
    if groups and n % replicas:
        live[-1] = n % replicas
    return live


def ungroup(y: np.ndarray, replicas: int, n: int) -> np.ndarray:
    """(groups, replicas * f) results -> the (n, f) results of the n samples grouped."""
    return y.reshape(y.shape[0] * replicas, y.shape[1] // replicas)[:n]


def lost_samples(lost_groups: List[int], replicas: int, n: int) -> List[int]:
    """The samples of lost groups (a group is lost whole: its copies share one sample slot
    of the output gatherer); a partial group's lost samples are its live copies'."""
    return [g * replicas + k for g in lost_groups for k in range(replicas) if g * replicas + k < n]
