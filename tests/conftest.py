"""Shared fixtures: models are built once per session (mapping takes seconds)."""
import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def record_board_io(monkeypatch):
    """Record (program symbol, int16 input, int16 output) of every emulated board run."""
    from tvm_spinn.runtime.emulator import EmulatedBoard

    calls = []
    original = EmulatedBoard.run

    def run(self, x_q):
        y_q = original(self, x_q)
        calls.append((self, np.array(x_q), np.array(y_q)))
        return y_q

    monkeypatch.setattr(EmulatedBoard, "run", run)
    return calls
