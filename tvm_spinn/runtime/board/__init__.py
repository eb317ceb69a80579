"""The real-board runtime: a program loaded on a SpiNNaker machine (a board on the
user's network, a spalloc allocation, or a board double) and driven by live IO.

- :mod:`.address`: what ``TVM_SPINN_BOARD`` names;
- :mod:`.loader`: loading and run control through the toolchain's transceiver;
- :mod:`.live_io`: samples in, results out, flow control, lost samples;
- :mod:`.session`: the board the executor drives (the emulator's interface);
- :mod:`.double_link`: the transceiver of a board double.
"""
from .address import BOARD_ENV, BoardAddress, parse_board_address

__all__ = ["BOARD_ENV", "BoardAddress", "parse_board_address", "open_session"]


def open_session(program, address: BoardAddress):
    """``program`` on ``address``: a :class:`.session.BoardView` on the board's session (the
    application is loaded and started by the first function of the board to open it)."""
    from .session import BoardView

    return BoardView(program, address)
