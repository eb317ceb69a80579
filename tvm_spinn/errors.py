"""Exceptions raised by tvm_spinn; each names the op or layer and the limit hit."""


class SpinnakerError(Exception):
    """Base class of every error tvm_spinn raises on purpose."""


class UnsupportedError(SpinnakerError):
    """A construct the board cannot run reached a stage that needs it on the board."""


class CalibrationError(SpinnakerError):
    """Calibration data is missing or does not match the model's inputs."""


class ResourceError(SpinnakerError):
    """The model (or one layer) does not fit a core, a chip or the board."""


class MappingError(SpinnakerError):
    """The SpiNNaker toolchain could not map the machine graph."""


class EmulatorError(SpinnakerError):
    """The emulated board failed: a dropped packet, an unroutable key, a kernel fault."""


class InputError(SpinnakerError):
    """A runtime input has the wrong shape or dtype."""


class ProgramFormatError(SpinnakerError):
    """A stored board program this tvm_spinn cannot read (another format version, or corrupt)."""
