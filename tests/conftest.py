"""Shared fixtures: models are built once per session (mapping takes seconds)."""
import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def record_board_io():
    """Record (board, int16 input, int16 output) of every emulated board run."""
    from tvm_spinn.runtime.emulator import EmulatedBoard

    with EmulatedBoard.recording() as calls:
        yield calls
