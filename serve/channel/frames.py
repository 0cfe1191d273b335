"""Framing on a channel connection: a 4-byte big-endian length, then a pickled message.

Messages: the router sends a ``ModelCall``; the replica answers ``("chunks", [chunk, ...])`` any
number of times and then ``("end",)``, or ``("busy",)`` at once. Pickle is safe here: the socket is
reachable only by this user (its folder is ``0700``), who can run code as the replicas anyway.
"""

from __future__ import annotations

import asyncio
import pickle
import struct
from typing import Any

HEADER = struct.Struct(">I")
CHUNKS, END, BUSY = "chunks", "end", "busy"


def encode(message: Any) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(body)) + body


async def read_message(reader: asyncio.StreamReader) -> Any:
    """The next message; ``asyncio.IncompleteReadError`` when the other side closed the connection."""
    (size,) = HEADER.unpack(await reader.readexactly(HEADER.size))
    return pickle.loads(await reader.readexactly(size))
