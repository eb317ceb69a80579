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


class BoardError(SpinnakerError):
    """The SpiNNaker board (or the board double) could not be reached, loaded or run."""


class LostSamplesError(SpinnakerError):
    """Samples of a batch did not come back whole from the board.

    Attributes: ``lost`` (sorted sample indices of the batch), ``n_samples`` (batch size),
    ``partial`` (int16 (n_samples, out_features): the board's outputs, zero for lost rows),
    ``where`` (which board). Nothing of a lost sample is ever returned as a result.
    """

    def __init__(self, lost=(), n_samples: int = 0, partial=None, where: str = "on the board") -> None:
        if isinstance(lost, str):  # rebuilt from its message after crossing TVM's FFI
            import re

            super().__init__(lost)
            m = re.search(r"(\d+) of (\d+) samples.*?batch: ([\d, ]+)", lost)
            self.lost = [int(v) for v in m.group(3).split(",") if v.strip()] if m else []
            self.n_samples, self.partial, self.where = (int(m.group(2)) if m else 0), None, ""
            return
        self.lost = sorted(int(i) for i in lost)
        self.n_samples = int(n_samples)
        self.partial = partial
        self.where = where
        shown = ", ".join(map(str, self.lost[:100])) + (", ..." if len(self.lost) > 100 else "")
        super().__init__(
            f"{len(self.lost)} of {self.n_samples} samples were lost {where} (sample indices in the batch: "
            f"{shown}): packets or datagrams did not arrive, so these outputs would be wrong. The statistics "
            f"(tvm_spinn.statistics(vm).provenance) show the drop counters. Run those samples again; if losses "
            f"persist, lower the host link rate (TVM_SPINN_LINK_MBPS), and if every sample is lost (a core "
            f"stopped), reload the board with tvm_spinn.use_board(vm, <the same board>).")


class ModelFileError(SpinnakerError):
    """A model or module file that cannot be read: missing, or not of the kind its name says."""
