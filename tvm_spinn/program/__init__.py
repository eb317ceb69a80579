"""The board program: what the codegen produces for one offloaded function and what the
runtime, the emulator, the statistics and the reports read (typed, by attribute).

It holds the quantised graph with tiling's accumulation cuts (for the integer reference
and the error model), each kernel core with the exact config region bytes the toolchain
generated for it, the live IO ends, and the board's mapping (chips, links, routing
tables, placements). It is stored in the ``"spinnaker"`` runtime module in the format
of :mod:`.format` (a JSON header plus raw little-endian arrays, never pickle).
"""
from .board import BoardProgram, Chip, CoreProgram, InputEnd, LayerSummary, OutputEnd, Placement  # noqa: F401
from .format import PROGRAM_FORMAT, ProgramFormatError, dump_program, load_program  # noqa: F401
