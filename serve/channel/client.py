"""The router's end of the channel: idle connections per replica socket, least busy replica first."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from pathlib import Path
from typing import Any, AsyncIterator

from common.call import ModelCall
from serve.channel.frames import BUSY, CHUNKS, END, encode, read_message

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class ChannelUnavailable(Exception):
    """The replica could not take the call (busy, gone, no socket) and nothing was answered yet:
    the caller sends the call another way."""


class ChannelClient:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._idle: dict[Path, list[Connection]] = defaultdict(list)
        self._in_flight: dict[Path, int] = defaultdict(int)
        self._absent: set[str] = set()  # replicas without a socket here (other nodes)

    def pick(self, replica_ids: tuple[str, ...]) -> Path | None:
        """The least busy of the replicas that have a socket on this node."""
        best: Path | None = None
        for replica_id in replica_ids:
            if replica_id in self._absent:
                continue
            path = self.directory / f"{replica_id}.sock"
            if path not in self._in_flight and not path.exists():
                self._absent.add(replica_id)
                continue
            if best is None or self._in_flight[path] < self._in_flight[best]:
                best = path
        return best

    async def call(self, path: Path, call: ModelCall) -> AsyncIterator[list[dict[str, Any]]]:
        """The replica's chunk batches. ``ChannelUnavailable`` before the first batch means it ran nothing
        that answered; closing this generator early closes the connection, which cancels the call."""
        self._in_flight[path] += 1
        connection, reusable = None, False
        try:
            connection, message = await self._send(path, call)
            while message[0] == CHUNKS:
                yield message[1]
                message = await read_message(connection[0])
            reusable = message[0] == END
        finally:
            self._in_flight[path] -= 1
            if connection is not None:
                self._release(path, connection, reusable)

    async def _send(self, path: Path, call: ModelCall) -> tuple[Connection, Any]:
        """Send on an idle connection (or a new one); return it with the first answer."""
        while True:
            idle = self._idle[path]
            connection = idle.pop() if idle else None
            fresh = connection is None
            try:
                if connection is None:
                    connection = await asyncio.open_unix_connection(str(path))
                connection[1].write(encode(call))
                first = await read_message(connection[0])
            except (asyncio.IncompleteReadError, OSError) as exc:
                if connection is not None:
                    connection[1].close()
                if fresh:  # no replica there, or it died before answering
                    raise ChannelUnavailable(f"replica at {path.name}: {type(exc).__name__}") from None
                continue  # an idle connection the replica has closed: try the next one
            if first[0] == BUSY:
                self._release(path, connection, True)
                raise ChannelUnavailable("replica busy")
            return connection, first

    def _release(self, path: Path, connection: Connection, reusable: bool) -> None:
        if reusable and not connection[1].is_closing():
            self._idle[path].append(connection)
        else:
            with contextlib.suppress(Exception):
                connection[1].close()
