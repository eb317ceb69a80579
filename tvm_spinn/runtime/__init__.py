"""Runtime: the executor behind each ``"spinnaker"`` runtime module (:mod:`.executor`), the
board seam :func:`open_board` with the emulated board (:mod:`.emulator`) and the real-board
runtime (:mod:`.board`: a board, spalloc, or a board double) behind it, and per-call
statistics (:mod:`.stats`)."""
from .board.address import BOARD_ENV  # noqa: F401
from .executor import (Executor, create_executor, executors, integer_reference, open_board,  # noqa: F401
                       spinnaker_modules, statistics, use_board)
from .stats import RunStatistics  # noqa: F401
