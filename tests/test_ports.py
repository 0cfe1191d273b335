"""``common.ports.free_port``: ports that no outgoing connection can take between the pick and the bind."""

from __future__ import annotations

import socket

from common.ports import ephemeral_port_range, free_port, is_free


def test_picked_ports_are_free_distinct_and_outside_the_ephemeral_range() -> None:
    low, high = ephemeral_port_range()
    ports = [free_port() for _ in range(20)]
    assert len(set(ports)) == 20
    assert all(p >= 20000 and not low <= p <= high and is_free(p) for p in ports)
    # the next port is kept too (an app's router replicas listen there behind its front door)
    assert all(is_free(p + 1) and p + 1 not in ports and not low <= p + 1 <= high for p in ports)


def test_a_listening_port_is_not_free() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", free_port()))
        held.listen()
        assert not is_free(held.getsockname()[1])
