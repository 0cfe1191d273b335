"""Pick a TCP port for a server that will bind it later (tests, benchmarks, launch scripts).

Binding port 0 hands out a port from the kernel's ephemeral range, the same range every outgoing
connection takes its local port from. Between the pick and the server's bind, one of Ray's many
long-lived connections can take that port, and the bind then fails with "address already in use".
Ports below the ephemeral range (and above Ray's worker ports, 10002-19999) cannot be taken that way.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
# Linux's default; macOS and Windows use 49152-65535, which this also avoids.
DEFAULT_EPHEMERAL_RANGE = (32768, 65535)
SAFE_PORTS_START = 20000  # above Ray's default worker ports (min/max_worker_port 10002-19999)
ATTEMPTS = 64

_handed_out: set[int] = set()


def ephemeral_port_range() -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports, inclusive."""
    try:
        low, high = EPHEMERAL_RANGE_FILE.read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return DEFAULT_EPHEMERAL_RANGE


def safe_port_candidates() -> list[int]:
    """Ports from 20000 up that lie outside the ephemeral range."""
    low, high = ephemeral_port_range()
    return [p for p in range(SAFE_PORTS_START, 65536) if not low <= p <= high]


def is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing holds now and no outgoing connection can take before a server binds it.

    The next port is free and kept too: an app's front door takes the port and its router replicas the
    next one (``router_config.front_door.router_port``'s default). Never the same port twice in one
    process. Falls back to a kernel-chosen port when the safe range is empty or full.
    """
    candidates = set(safe_port_candidates())
    for port in random.sample(sorted(candidates), min(ATTEMPTS, len(candidates))):
        pair = (port, port + 1)
        if all(p in candidates and p not in _handed_out and is_free(p, host) for p in pair):
            _handed_out.update(pair)
            return port
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]
