"""Several boards (issue 11 item 3): a model too big for one SpiNN-5 board is refused there with
a message naming the multi-board option, and built for a triad of three boards it is placed
across them by the toolchain, routed over the links between boards and runs on the emulator
bit for bit against the integer reference."""
import numpy as np
import pytest
import torch
import tvm
from tvm import relax

import tvm_spinn
from tvm_spinn.errors import ResourceError
from tvm_spinn.tiling import resources as res

# Dense layers on about 1,500 cores (1,477; their int16 weights alone need at least 1,326, a core's DTCM
# holds 55.8 KiB of them): too big for one board's 808 cores at any tiling.
SIZES = (4096, 4096, 4096, 1024, 10)


@pytest.fixture(scope="module")
def big_mlp():
    torch.manual_seed(11)
    layers = []
    for a, b in zip(SIZES[:-1], SIZES[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers[:-1]).eval()
    x = torch.randn(8, SIZES[0])
    return tvm_spinn.from_torch(model, (x[:1],)), x.numpy()


def test_geometry_matches_the_toolchain():
    """Which board each chip is on (the Ethernet chip the timed emulation and the IP tags use)
    agrees with spinn_machine's virtual machine of the same size."""
    from spinn_machine import virtual_machine
    from spinn_machine.config_setup import unittest_setup
    from spinn_utilities.config_holder import set_config

    for board in (res.SPINN_5, res.SPINN_5_X3):
        unittest_setup()
        set_config("Machine", "version", str(board.version))
        machine = virtual_machine(board.width, board.height)
        assert machine.n_chips == board.chips
        assert sum(c.n_placable_processors for c in machine.chips) == board.app_cores
        assert sorted((c.x, c.y) for c in machine.ethernet_connected_chips) == sorted(board.ethernet_chips)
        for c in machine.chips:
            assert board.ethernet_chip_of(c.x, c.y) == (c.nearest_ethernet_x, c.nearest_ethernet_y)


def test_one_board_refuses_and_names_the_multi_board_option(big_mlp):
    mod, x = big_mlp
    with pytest.raises(ResourceError, match=r"too big.*808 application cores.*board='spinn5x3'"):
        tvm_spinn.build(mod, calibration=x, strict=True)


def test_three_boards_run_bit_exact(big_mlp):
    mod, x = big_mlp
    ex = tvm_spinn.build(mod, calibration=x, board="spinn5x3", strict=True)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    xs = x[:3]
    y = vm["main"](tvm.runtime.tensor(xs)).numpy()
    program = tvm_spinn.executors(vm)[0].program
    assert program.n_cores > res.SPINN_5.app_cores  # more than one board holds
    boards = {res.SPINN_5_X3.ethernet_chip_of(x_, y_) for x_, y_, _ in program.placements.values()}
    assert len(boards) == 3
    np.testing.assert_array_equal(np.round(y / program.output_scale).astype(np.int16),
                                  tvm_spinn.integer_reference(program, xs))
    # packets crossed from board to board (links whose ends are on different boards)
    stats = tvm_spinn.statistics(vm)
    crossed = sum(n for name, n in stats.link_packets.items() if _between_boards(program, name))
    assert crossed > 0
    # ... and the timed emulation put them on the boards' FPGA serial links
    if stats.timed is not None:
        assert any(name.startswith("link board ") and u > 0 for name, u in stats.timed.utilisation.items())


def test_board_to_board_links_and_the_gatherer_rate():
    """The timed emulation's serial links: each board edge (6 per board) multiplexes 8 chip
    links, as a SpiNN-5 board's FPGAs do; a gatherer on any board's Ethernet chip sends at the
    Ethernet chip's rate."""
    from spinn_machine import virtual_machine
    from spinn_machine.config_setup import unittest_setup
    from spinn_utilities.config_holder import set_config

    from tvm_spinn.runtime import timing

    unittest_setup()
    set_config("Machine", "version", "5")
    machine = virtual_machine(12, 12)
    chips = sorted((c.x, c.y) for c in machine.chips)
    links = {(c.x, c.y, link.source_link_id): (link.destination_x, link.destination_y)
             for c in machine.chips for link in c.router.links}
    serial, names = timing.board_links(res.SPINN_5_X3, chips, links)
    assert len(names) == 3 * 6
    assert sorted(np.bincount(serial[serial >= 0])) == [8] * 18
    assert (timing.board_links(res.SPINN_5, chips, links)[0] == -1).all()
    eth = res.SPINN_5_X3.ethernet_chips
    assert timing.host_out_bytes_per_s((4, 8), eth) == timing.HOST_OUT_BYTES_PER_S_ETHERNET_CHIP
    assert timing.host_out_bytes_per_s((5, 8), eth) == timing.HOST_OUT_BYTES_PER_S_OTHER_CHIP


def _between_boards(program, name: str) -> bool:
    xy, link = name.split(":")
    x, y = map(int, xy.split(","))
    x2, y2 = program.links[(x, y, int(link))]
    return res.SPINN_5_X3.ethernet_chip_of(x, y) != res.SPINN_5_X3.ethernet_chip_of(x2, y2)


def test_spalloc_asks_for_the_boards_the_build_needs():
    from tvm_spinn.runtime.board.session import spalloc_request

    assert spalloc_request(res.SPINN_5) == ((1,), {})
    assert spalloc_request(res.SPINN_5_X3) == ((1, 1), {"require_torus": True})  # one triad, a whole torus
