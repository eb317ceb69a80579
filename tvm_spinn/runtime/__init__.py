"""Runtime: the executor behind each ``"spinnaker"`` runtime module (:mod:`.executor`), the
board seam :func:`open_board` with the emulated board behind it (:mod:`.emulator`), and
per-call statistics (:mod:`.stats`)."""
from .executor import (BOARD_ENV, Executor, create_executor, executors, integer_reference, open_board,  # noqa: F401
                       register, spinnaker_modules, statistics)
from .stats import RunStatistics  # noqa: F401
