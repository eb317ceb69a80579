"""What the board's kernels compute (``c_runtime/kernels``), shared by the stage that offers
ops to the board (partition) and the one that encodes them (machine), so that the two
cannot disagree."""

# Activations the dense, conv, reduce and add kernels apply (spinn_fixed.h spinn_finish):
# clip (ReLU6, Hardtanh) with its bounds and leaky relu with its slope in the config.
ACTIVATIONS = ("none", "relu", "tanh", "sigmoid", "clip", "leaky_relu")
# Activations the add tile applies (add_tile.c; tanh / sigmoid with the table in its config).
ADD_ACTIVATIONS = ACTIVATIONS
