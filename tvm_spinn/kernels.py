"""What the board's kernels compute (``c_runtime/kernels``), shared by the stage that offers
ops to the board (partition) and the one that encodes them (machine), so that the two
cannot disagree."""

# Activations the dense, conv and reduce kernels apply (spinn_fixed.h spinn_activate).
ACTIVATIONS = ("none", "relu", "tanh", "sigmoid")
# Activations the add tile applies (add_tile.c; tanh / sigmoid with the table in its config).
ADD_ACTIVATIONS = ACTIVATIONS
