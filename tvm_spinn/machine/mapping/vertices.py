"""SpiNNaker toolchain (front-end-common / PACMAN 7.4.1) vertices for a MachineGraphSpec.

Only imported inside the mapping worker subprocess: importing the toolchain is slow and
it keeps global state, so the parent process never loads it.
"""
from __future__ import annotations

import os
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np
from pacman.model.graphs.common import Slice
from pacman.model.placements import Placement
from pacman.model.resources import ConstantSDRAM
from spinn_front_end_common.abstract_models.impl import MachineDataSpecableVertex
from spinn_front_end_common.data import FecDataView
from spinn_front_end_common.interface.ds import DataSpecificationGenerator
from spinn_front_end_common.utilities.constants import SIMULATION_N_BYTES
from spinn_front_end_common.utilities.utility_objs import LivePacketGatherParameters
from spinn_front_end_common.utility_models import (
    EIEIOParameters,
    LivePacketGatherMachineVertex,
    ReverseIPTagMulticastSourceMachineVertex,
)
from spinn_machine.tags import IPTag, ReverseIPTag
from spinnaker_graph_front_end.utilities import SimulatorVertex
from spinnman.messages.eieio import EIEIOType

from spinn_front_end_common.interface.provenance import ProvidesProvenanceDataFromMachineImpl

from ..graph import (CONFIG_HEADER_WORDS, CONFIG_REGION, FIX_KEY, FIX_MASK, INPUT, KERNEL, LOST_TIMEOUT_TICKS, OUTPUT,
                     PROVENANCE_NAMES, PROVENANCE_REGION, SYSTEM_REGION, PartitionSpec, VertexSpec, frame_config,
                     partition_name)

# Where a real board's live packet gatherer would send its EIEIO packets. On the
# virtual board this only fills the LPG's IP tag; the board runtime may override it.
LPG_PORT = int(os.environ.get("TVM_SPINN_LPG_PORT", "17895"))
LPG_HOST = os.environ.get("TVM_SPINN_LPG_HOST", "localhost")


class KernelVertex(SimulatorVertex, MachineDataSpecableVertex, ProvidesProvenanceDataFromMachineImpl):
    """One core running one of our C kernels: region 0 = simulation header, 1 = config
    (framed with its length, checksum and lost timeout, see tvm_spinn.machine.graph.frame_config),
    2 = provenance (front-end-common's system words, then PROVENANCE_NAMES), which
    front-end-common's own run flow would also read back and report."""

    __slots__ = ("_vspec",)

    def __init__(self, vspec: VertexSpec):
        # A slice of n_keys atoms makes the I/O database map every key to an atom.
        vslice = Slice(0, vspec.n_keys - 1) if vspec.n_keys > 0 else None
        super().__init__(vspec.label, vspec.binary, vertex_slice=vslice)
        self._vspec = vspec

    @property
    def _provenance_region_id(self) -> int:
        return PROVENANCE_REGION

    @property
    def _n_additional_data_items(self) -> int:
        return len(PROVENANCE_NAMES)

    def parse_extra_provenance_items(self, label: str, x: int, y: int, p: int, provenance_data) -> None:
        """front-end-common's own run flow (not tvm_spinn's board runtime, which reads the
        region itself) records our words under their names."""
        from spinn_front_end_common.interface.provenance import ProvenanceWriter

        with ProvenanceWriter() as db:
            for name, value in zip(PROVENANCE_NAMES, self._get_extra_provenance_words(provenance_data)):
                db.insert_core(x, y, p, name, int(value))

    def _config_bytes(self) -> int:
        return (CONFIG_HEADER_WORDS + len(self._vspec.config)) * 4

    @property
    def sdram_required(self) -> ConstantSDRAM:
        return ConstantSDRAM(self._vspec.sdram_bytes + SIMULATION_N_BYTES + self._config_bytes()
                             + self.get_provenance_data_size(len(PROVENANCE_NAMES)))

    def get_n_keys_for_partition(self, partition_id: str) -> int:
        return self._vspec.n_keys  # every partition: a whole block (the kernel's key fields)

    def fixed_config(self) -> np.ndarray:
        """The config words with every key fix-up filled from the toolchain's routing info."""
        words = np.asarray(self._vspec.config, dtype=np.uint32).copy()
        if not self._vspec.key_fixups:
            return words
        infos = FecDataView.get_routing_infos()
        for index, source_label, what, part in self._vspec.key_fixups:
            info = infos.get_info_from(_BY_LABEL[source_label], partition_name(part))
            # OR into the placeholder: it may carry field bits below the block (e.g. the
            # channel/row of a per-row receive entry); usually it is 0.
            if what == FIX_KEY:
                words[index] |= np.uint32(info.key)
            elif what == FIX_MASK:
                words[index] |= np.uint32(info.mask)
            else:
                raise ValueError(f"{self.label}: unknown key fix-up kind {what!r}")
        return words

    def generate_machine_data_specification(
        self,
        spec: DataSpecificationGenerator,
        placement: Placement,
        iptags: Optional[Iterable[IPTag]],
        reverse_iptags: Optional[Iterable[ReverseIPTag]],
    ) -> None:
        self.generate_system_region(spec, SYSTEM_REGION)
        spec.reserve_memory_region(CONFIG_REGION, self._config_bytes(), label="config")
        spec.switch_write_focus(CONFIG_REGION)
        spec.write_array(frame_config(self.fixed_config(), LOST_TIMEOUT_TICKS, self._vspec.lost_bit,
                                     self._vspec.send_gap, self._vspec.send_phase))
        self.reserve_provenance_data_region(spec)
        spec.end_specification()


# label -> toolchain vertex of the current worker run (key fix-ups look sources up here).
_BY_LABEL: Dict[str, object] = {}


def make_vertex(vspec: VertexSpec):
    """The toolchain machine vertex for one VertexSpec."""
    if vspec.kind == KERNEL:
        return KernelVertex(vspec)
    if vspec.kind == INPUT:
        if vspec.n_keys <= 0:
            raise ValueError(f"input vertex {vspec.label} needs n_keys > 0")
        # No reverse IP tag: the Ethernet chip has 7 tags for every function of a board, so
        # the host addresses each input source as an SDP port of its core (x, y, p) through
        # the board's SCP connection instead (any number of inputs, no tag).
        return ReverseIPTagMulticastSourceMachineVertex(
            vspec.label,
            n_keys=vspec.n_keys,
            eieio_params=EIEIOParameters(reserve_reverse_ip_tag=False),
        )
    if vspec.kind == OUTPUT:
        params = LivePacketGatherParameters(
            port=LPG_PORT,
            hostname=LPG_HOST,
            strip_sdp=True,
            message_type=EIEIOType.KEY_PAYLOAD_32_BIT,
            use_payload_prefix=False,
            payload_as_time_stamps=False,
        )
        return LivePacketGatherMachineVertex(params, label=vspec.label)
    raise ValueError(f"vertex {vspec.label}: unknown kind {vspec.kind!r}")


def build_graph(vspecs: List[VertexSpec], partitions: List[PartitionSpec], gfe) -> Dict[str, object]:
    """Add every vertex and every partition's edges to the front end; returns label ->
    toolchain vertex.

    An edge into a LivePacketGatherer needs both a machine edge (the router only routes
    partitions that exist in the graph) and ``add_incoming_source`` (the LPG's config and
    the live I/O database learn which keys belong to which source).
    """
    from pacman.model.graphs.machine import MachineEdge

    _BY_LABEL.clear()
    for vs in vspecs:
        if vs.label in _BY_LABEL:
            raise ValueError(f"duplicate vertex label {vs.label!r}")
        v = make_vertex(vs)
        _BY_LABEL[vs.label] = v
        gfe.add_machine_vertex_instance(v)
    for part in partitions:
        src, name = _BY_LABEL[part.pre], partition_name(part.index)
        for post in part.posts:
            dst = _BY_LABEL[post]
            gfe.add_machine_edge_instance(MachineEdge(src, dst), name)
            if isinstance(dst, LivePacketGatherMachineVertex):
                dst.add_incoming_source(src, name)
    return dict(_BY_LABEL)
