"""Calibration data given as batches: a ``torch.utils.data.DataLoader``, a generator, any
iterable that yields arrays or tensors (one-input models) or tuples of them (inputs first,
then e.g. labels), gathered into one array per position along the sample axis."""
from __future__ import annotations

from typing import Any, List, Tuple

import numpy as np

from ..errors import CalibrationError


def _as_array(value: Any, where: str) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor (maybe on a GPU, maybe requiring grad)
        value = value.detach().cpu().numpy()
    elif hasattr(value, "numpy"):  # a tvm.runtime.Tensor
        value = value.numpy()
    if not isinstance(value, (np.ndarray, np.generic, int, float, list)):
        raise CalibrationError(f"calibration {where} is a {type(value).__name__}; batches must be arrays or "
                               "tensors, or tuples of them (inputs first)")
    array = np.asarray(value)
    if array.ndim == 0:
        raise CalibrationError(f"calibration {where} is a scalar; a batch needs a first (sample) axis")
    return array


class CalibrationBatches:
    """The batches of an iterable, gathered: ``arrays[k]`` holds position k of every batch
    (samples along axis 0). Built once, so a pipeline run twice sees the same data."""

    def __init__(self, iterable: Any) -> None:
        per_position: List[List[np.ndarray]] = []
        for b, batch in enumerate(iterable):
            parts = tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)
            if per_position and len(parts) != len(per_position):
                raise CalibrationError(f"calibration batch {b} has {len(parts)} parts, batch 0 had "
                                       f"{len(per_position)}: every batch must have the same structure")
            if not per_position:
                per_position = [[] for _ in parts]
            for k, part in enumerate(parts):
                where = f"batch {b}" + (f" part {k}" if len(parts) > 1 else "")
                array = _as_array(part, where)
                if per_position[k] and array.shape[1:] != per_position[k][0].shape[1:]:
                    raise CalibrationError(f"calibration {where} has samples of shape {array.shape[1:]}, batch 0 "
                                           f"had {per_position[k][0].shape[1:]}")
                per_position[k].append(array)
        if not per_position:
            raise CalibrationError("calibration is an iterable that yielded no batches (an exhausted generator, "
                                   "or an empty DataLoader?)")
        self.n_batches = len(per_position[0])
        self.arrays: Tuple[np.ndarray, ...] = tuple(np.concatenate(p) for p in per_position)

    def inputs(self, n_inputs: int) -> List[np.ndarray]:
        """The first ``n_inputs`` positions (a model's inputs; what follows, e.g. labels, is
        not used). CalibrationError if the batches have fewer."""
        if len(self.arrays) < n_inputs:
            raise CalibrationError(f"calibration batches have {len(self.arrays)} part(s) but main takes {n_inputs} "
                                   "inputs: yield a tuple (input 0, input 1, ...) per batch")
        return list(self.arrays[:n_inputs])


def gather_batches(calibration: Any) -> Any:
    """``calibration`` as the pipeline keeps it: an iterable of batches (anything iterable
    but an array, a tensor, a list or a tuple, which keep their meaning: the samples, or
    one array per model input) becomes :class:`CalibrationBatches`; the rest is returned
    unchanged."""
    if calibration is None or isinstance(calibration, (np.ndarray, list, tuple, str, bytes, dict,
                                                       CalibrationBatches)) \
            or hasattr(calibration, "numpy") or not hasattr(calibration, "__iter__"):
        return calibration
    return CalibrationBatches(calibration)
