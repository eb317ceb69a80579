"""Quantisation: int16 fixed-point arithmetic (:mod:`.fixed_point`), the one quantiser
(:mod:`.quantize`), the one integer reference (:mod:`.reference`) and the one error model
(:mod:`.error`) of an operator graph."""
from .error import error_bound  # noqa: F401
from .fixed_point import quantize_tensor  # noqa: F401
from .quantize import QOp, QuantizedGraph, quantize_graph  # noqa: F401
from .reference import graph_reference  # noqa: F401
