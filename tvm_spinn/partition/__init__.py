"""Partition: the SpiNNaker composite patterns, their check functions and
:func:`partition_for_spinnaker` (:mod:`.patterns`)."""
from .patterns import CODEGEN, fold_batch_norm, offloaded_functions, partition_for_spinnaker, pattern_names  # noqa: F401
