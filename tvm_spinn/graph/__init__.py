"""The operator graph IR: what an offloaded function computes (:mod:`.ops`, :mod:`.network`),
window arithmetic (:mod:`.windows`) and its extraction from Relax (:mod:`.extract`)."""
from .network import OpGraph, float_forward, graph_input, shapes  # noqa: F401
from .ops import NETWORK_INPUT, Add, Concat, Conv2D, DenseLayer, Flatten, Op, Pool2D  # noqa: F401
