"""Live IO with a loaded board: samples in as EIEIO over SDP, results back from the live
packet gatherer as EIEIO over UDP, ordered by sample.

Flow control (why it is needed: the toolchain's ``LiveEventConnection`` sleeps 0.1 s after
every 6 messages, about 60 messages/s; SCAMP on the Ethernet chip holds about 8 SDP
messages in flight and drops the rest):

- **Window**: at most ``n_slots`` samples in flight, one per kernel slot (the kernels'
  contract: a slot is reused only after its sample has left the board). The next sample
  enters as soon as the previous one in its slot is complete or declared lost.
- **Rate**: datagrams are paced to ``TVM_SPINN_LINK_MBPS`` megabits/s of UDP payload if it
  is set, else to the program's pace (runtime.pacing: the fastest rate, at most 32, about
  half the 5-10 MB/s published for SDP into a board without handshaking
  (../notes/board.md), at which the timed emulation predicts that the board drops no
  packet). A board double is not paced.
- **Several boards**: each input's datagrams go to the Ethernet of the board its source
  core sits on (the transceiver's SCAMP connection to that board's Ethernet chip), each
  board paced on its own: copies of a model on three boards take three host links.
- **Copies** (``BoardProgram.replicas``): a sample is a group of one sample per copy; a
  last, partial group sends only its live copies' inputs and is done when their values
  arrived (``tvm_spinn.runtime.replicas``).
- **Completion**: a sample is done when every output value arrived; it is lost if a
  lost-value marker (an EIEIO key without payload) arrived for it, or if nothing arrived
  for ``TVM_SPINN_SAMPLE_TIMEOUT`` seconds (default 0.5) while it was in flight.
- **After a loss** the lost samples' slots rest for twice the cores' lost timeout before
  reuse, and a call that lost samples waits that long before it returns, discarding what
  still arrives: stale markers of lost samples are never taken for new samples. Datagrams
  waiting when a call starts are discarded too.

Datagrams: inputs are EIEIO ``KEY_PAYLOAD_32_BIT`` data messages (31 events, 250 bytes)
wrapped in SDP to port 1 of each input's reverse-IP-tag multicast source core, which
sends each event as a multicast packet; outputs are the live packet gatherer's EIEIO
messages (``strip_sdp``), ``KEY_PAYLOAD_32_BIT`` for values and ``KEY_32_BIT`` (no
payload) for lost-value markers. Encoding and decoding use spinnman's EIEIO classes and
the emulator's own key codec (``EmulatedBoard.encode`` / ``decode``).
"""
from __future__ import annotations

import collections
import os
import socket
import time
from typing import Dict, List, Optional, Tuple

import numpy as np

from ...errors import BoardError
from ...machine.graph import LOST_TIMEOUT_TICKS
from ...program import BoardProgram
from ...tiling import resources as res
from .loader import setting

EVENTS_PER_MESSAGE = 31  # KEY_PAYLOAD_32_BIT: 2-byte header + 8 bytes per event <= 256-byte SDP data
INPUT_SDP_PORT = 1  # front-end-common's reverse IP tag multicast source (SDP_PORTS.INPUT_BUFFERING_SDP_PORT)
MAX_SLOTS = 16  # SPINN_MAX_SLOTS


def sample_timeout_s() -> float:
    return setting("TVM_SPINN_SAMPLE_TIMEOUT", 0.5)


# Sample timeouts in a row with nothing at all coming back: the board produces no output
# (a core on every path stopped); the rest of the batch is then lost at once, not 0.5 s a window.
DEAD_WINDOWS = 3


def input_streams(txrx, board: Optional[res.Board], input_cores: List[Tuple[int, int, int]]
                  ) -> Tuple[List[int], List[object]]:
    """Per input: its board (index into board.ethernet_chips; 0 on one board) and the
    transceiver's SCAMP connection to that board's Ethernet chip (None: the transceiver's
    own choice, e.g. one board or a board double, which has one address)."""
    if board is None or board.boards == 1:
        return [0] * len(input_cores), [None] * len(input_cores)
    from spinnman.connections.udp_packet_connections import SCAMPConnection

    by_chip = {}
    for conn in getattr(txrx, "get_connections", lambda: ())() or ():
        if isinstance(conn, SCAMPConnection):
            by_chip.setdefault((conn.chip_x, conn.chip_y), conn)
    streams, conns = [], []
    for x, y, _ in input_cores:
        eth = board.ethernet_chip_of(x, y)
        streams.append(board.ethernet_chips.index(eth))
        conns.append(by_chip.get(eth))
    return streams, conns


class LiveIO:
    """Streams batches through a running board.

    txrx: the transceiver (its ``send_sdp_message`` carries the inputs). sock: the UDP
    socket the live packet gatherer's IP tag points at. codec: ``EmulatedBoard.codec``
    of the program. input_cores: (x, y, p) of each input's source core. paced: apply the
    rate limit (real boards).
    """

    def host_mbps(self) -> float:
        """The rate (Mbit/s of UDP payload) the inputs are paced to: TVM_SPINN_LINK_MBPS if set,
        else the program's pace (runtime.pacing: the fastest at which the timed emulation
        predicts no dropped packet; probed on the emulator once per program)."""
        from ..emulator import EmulatedBoard
        from ..pacing import host_mbps

        return host_mbps(self.program, lambda rate: EmulatedBoard(self.program, timed=True, host_mbps=rate))

    def __init__(self, txrx, sock: socket.socket, codec, program: BoardProgram,
                 input_cores: List[Tuple[int, int, int]], paced: bool, health=None) -> None:
        self.txrx, self.sock, self.codec, self.program = txrx, sock, codec, program
        self.input_cores = input_cores
        # each input's board (its host-in stream) and the connection to that board's Ethernet
        self.stream_of, self.connections = input_streams(txrx, res.board_named(program.board), input_cores)
        self.paced = paced
        self.health = health  # raises BoardError if the board is gone or a core crashed
        self.interrupted = False  # a call ended early (Ctrl-C): its samples may still come back
        self.counts: Dict[str, int] = collections.Counter()

    def _messages(self, keys, payloads, which) -> List[Tuple[int, bytes]]:
        """EIEIO messages (input index, bytes) of one sample's packets."""
        from spinnman.messages.eieio import EIEIOType
        from spinnman.messages.eieio.data_messages import EIEIODataMessage

        out = []
        for k in range(len(self.input_cores)):
            sel = np.flatnonzero(which == k)
            for start in range(0, len(sel), EVENTS_PER_MESSAGE):
                msg = EIEIODataMessage.create(EIEIOType.KEY_PAYLOAD_32_BIT)
                for i in sel[start:start + EVENTS_PER_MESSAGE]:
                    msg.add_key_and_payload(int(keys[i]), int(payloads[i]))
                out.append((k, msg.bytestring))
        return out

    def _send(self, k: int, body: bytes) -> None:
        from spinnman.messages.sdp import SDPFlag, SDPHeader, SDPMessage

        x, y, p = self.input_cores[k]
        header = SDPHeader(flags=SDPFlag.REPLY_NOT_EXPECTED, destination_port=INPUT_SDP_PORT, destination_cpu=p,
                           destination_chip_x=x, destination_chip_y=y, source_port=0, source_cpu=0,
                           source_chip_x=0, source_chip_y=0, tag=0)
        self.txrx.send_sdp_message(SDPMessage(header, data=body), self.connections[k])
        self.counts["datagrams_sent"] += 1
        self.counts["bytes_sent"] += len(body)
        self.counts["packets_injected"] += (len(body) - 2) // 8  # KEY_PAYLOAD_32_BIT events

    def _receive(self, deadline: float, on_event) -> bool:
        """Read the gatherer's datagrams until none waits (or deadline); on_event(key,
        payload, marker) for each event. True if anything arrived."""
        from spinnman.messages.eieio import read_eieio_data_message

        got = False
        while True:
            timeout = max(0.0, deadline - time.monotonic())
            self.sock.settimeout(timeout if not got else 0.0)
            try:
                data = self.sock.recv(65536)
            except (socket.timeout, BlockingIOError):
                return got
            got = True
            self.counts["datagrams_received"] += 1
            try:
                msg = read_eieio_data_message(data, 0)
            except Exception:  # not an EIEIO data message: count it, never guess
                self.counts["datagrams_malformed"] += 1
                continue
            while msg.is_next_element:
                e = msg.next_element
                payload = getattr(e, "payload", None)
                on_event(int(e.key), int(payload or 0), payload is None)

    def run(self, x_q: np.ndarray, n_slots: int, live: Optional[np.ndarray] = None
            ) -> Tuple[np.ndarray, List[int]]:
        """Stream int16 samples (n, replicas * in_features: one per copy) through the board;
        returns (y int16 (n, replicas * out_features), sorted indices of lost samples; their
        rows of y are 0). live: per sample, the copies that carry one (the first live[i];
        None: all): the others' inputs are not sent and their values in y are 0."""
        rest_s = 2 * LOST_TIMEOUT_TICKS * 1e-3 + 0.05
        # what an interrupted call left in flight drains away before this one starts
        self._discard(rest_s if self.interrupted else 0.0)
        self.interrupted = False
        try:
            return self._stream(x_q, n_slots, rest_s, live)
        except BaseException:
            self.interrupted = True
            raise

    def _stream(self, x_q: np.ndarray, n_slots: int, rest_s: float, live: Optional[np.ndarray]
                ) -> Tuple[np.ndarray, List[int]]:
        copies = max(1, self.program.replicas)
        n, out_n = x_q.shape[0], self.program.out_features * copies
        live = np.full(n, copies, np.int64) if live is None else np.asarray(live, np.int64)
        expect = [0] * MAX_SLOTS  # values each slot's sample returns: its live copies'
        y = np.zeros((n, out_n), np.int16)
        bufs = np.zeros(MAX_SLOTS * out_n, np.int16)
        counts = np.zeros(MAX_SLOTS, np.uint32)
        lost_flag = np.zeros(MAX_SLOTS, np.uint8)
        slot_sample = [-1] * MAX_SLOTS
        free = collections.deque(range(n_slots))
        resting: List[Tuple[float, int]] = []
        lost: List[int] = []
        outboxes = [collections.deque() for _ in range(max(self.stream_of, default=0) + 1)]  # one per board
        next_sample, done = 0, 0
        bytes_per_s = self.host_mbps() * 1e6 / 8 if self.paced else 0.0
        timeout = sample_timeout_s()
        dead_windows = 0
        events_at_timeout = -1
        send_at = [time.monotonic()] * len(outboxes)
        last_progress = time.monotonic()

        def finish(slot: int, was_lost: bool) -> None:
            nonlocal done
            sample = slot_sample[slot]
            if was_lost:
                lost.append(sample)
                resting.append((time.monotonic() + rest_s, slot))
            else:
                y[sample, :expect[slot]] = bufs[slot * out_n:slot * out_n + expect[slot]]
                free.append(slot)
            slot_sample[slot] = -1
            counts[slot] = 0
            lost_flag[slot] = 0
            done += 1

        def on_event(key: int, payload: int, marker: bool) -> None:
            nonlocal last_progress
            slot = self.codec.decode(key, payload, marker, bufs, counts, lost_flag)
            if slot < 0:
                self.counts["events_unknown_key"] += 1
                return
            if slot >= MAX_SLOTS:
                return
            self.counts["markers_received" if marker else "events_received"] += 1
            if slot_sample[slot] < 0:  # a straggler of a sample already declared lost
                self.counts["events_stale"] += 1
                counts[slot], lost_flag[slot] = 0, 0
                return
            last_progress = time.monotonic()
            if counts[slot] >= expect[slot]:
                finish(slot, bool(lost_flag[slot]))

        while done < n:
            now = time.monotonic()
            for entry in [r for r in resting if r[0] <= now]:
                resting.remove(entry)
                free.append(entry[1])
            while next_sample < n and free and sum(map(len, outboxes)) < 4 * EVENTS_PER_MESSAGE:
                if all(s < 0 for s in slot_sample):
                    last_progress = now  # nothing was in flight: the clock starts now
                slot = free.popleft()
                slot_sample[slot] = next_sample
                expect[slot] = int(live[next_sample]) * self.program.out_features
                bufs[slot * out_n:(slot + 1) * out_n] = 0
                keys, payloads, which = self.codec.encode(x_q[next_sample], slot, int(live[next_sample]))
                for k, body in self._messages(keys, payloads, which):
                    outboxes[self.stream_of[k]].append((k, body))
                next_sample += 1
            for b, outbox in enumerate(outboxes):  # each board's Ethernet paced on its own
                while outbox and (not self.paced or time.monotonic() >= send_at[b]):
                    k, body = outbox.popleft()
                    self._send(k, body)
                    if self.paced:
                        send_at[b] = max(send_at[b], time.monotonic()) + (len(body) + 14 + 66) / bytes_per_s
            sending = any(outboxes)  # datagrams still waiting for their board's pace
            wait = 0.0005 if sending else 0.02
            self._receive(time.monotonic() + wait, on_event)
            in_flight = [s for s in range(MAX_SLOTS) if slot_sample[s] >= 0]
            if in_flight and not sending and time.monotonic() - last_progress > timeout:
                if self.health is not None:
                    self.health()  # a board that is gone, or crashed cores: a BoardError, not lost samples
                events = self.counts["events_received"] + self.counts["markers_received"]
                dead_windows = dead_windows + 1 if events == events_at_timeout else 1
                events_at_timeout = events
                for s in in_flight:  # nothing came back in time: a core stopped, or the outputs were lost
                    self.counts["samples_timed_out"] += 1
                    finish(s, True)
                if dead_windows >= DEAD_WINDOWS:  # nothing comes back at all: the rest is lost too
                    self.counts["samples_not_sent"] += n - next_sample
                    lost.extend(range(next_sample, n))
                    done += n - next_sample
                    next_sample = n
                    for box in outboxes:
                        box.clear()
                last_progress = time.monotonic()
        if lost:  # stragglers of the lost samples: consumed here, never by the next call
            self._discard(rest_s)
        return y, sorted(lost)

    def _discard(self, seconds: float) -> None:
        """Read and drop the gatherer's datagrams for ``seconds`` (0: those waiting now)."""
        deadline = time.monotonic() + seconds
        while True:
            self.sock.settimeout(max(0.0, deadline - time.monotonic()))
            try:
                self.sock.recv(65536)
                self.counts["datagrams_discarded"] += 1
            except (socket.timeout, BlockingIOError):
                if time.monotonic() >= deadline:
                    return
