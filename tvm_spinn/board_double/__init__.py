"""A board double for testing the real-board runtime without hardware:
``python -m tvm_spinn.board_double`` (see :mod:`.server` for what is real and what is the double)."""
from .server import BoardDouble  # noqa: F401
