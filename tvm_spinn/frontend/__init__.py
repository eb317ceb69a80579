"""Frontends: PyTorch models to Relax (:mod:`.pytorch`, through ``torch.export``)."""
from .pytorch import from_torch  # noqa: F401
