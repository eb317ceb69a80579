"""Frontends: PyTorch models (:mod:`.pytorch`, through ``torch.export``) and ONNX models
(:mod:`.onnx`) to Relax."""
from .onnx import from_onnx  # noqa: F401
from .pytorch import from_torch  # noqa: F401
