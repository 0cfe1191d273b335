"""The router's end of the channel: idle connections per replica socket, least busy replica first.

Idle connections are kept for reuse, at most ``MAX_IDLE_PER_REPLICA`` per replica, and closed once unused for
``IDLE_TIMEOUT_S``: a burst leaves no crowd of open sockets behind, and the connections of a replica that was
replaced (its socket gone) are closed instead of kept forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, AsyncIterator

from common.call import ModelCall
from serve.channel.frames import BUSY, CHUNKS, END, encode, read_message

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]
MAX_IDLE_PER_REPLICA = 32
IDLE_TIMEOUT_S = 30.0
PRUNE_INTERVAL_S = 10.0


class ChannelUnavailable(Exception):
    """The replica could not take the call (busy, gone, no socket) and nothing was answered yet:
    the caller sends the call another way."""


class ChannelClient:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._idle: dict[Path, list[tuple[Connection, float]]] = defaultdict(list)  # with when each was released
        self._in_flight: dict[Path, int] = defaultdict(int)
        self._absent: set[str] = set()  # replicas without a socket here (other nodes)
        self._pruning: asyncio.TimerHandle | None = None

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
        self._schedule_pruning()
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
            connection = idle.pop()[0] if idle else None
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
        idle = self._idle[path]
        if reusable and not connection[1].is_closing() and len(idle) < MAX_IDLE_PER_REPLICA:
            idle.append((connection, time.monotonic()))
        else:
            _close(connection)

    def prune(self, now: float | None = None) -> int:
        """Close the connections idle for more than ``IDLE_TIMEOUT_S``; returns how many."""
        cutoff = (time.monotonic() if now is None else now) - IDLE_TIMEOUT_S
        closed = 0
        for path in list(self._idle):
            idle = self._idle[path]
            keep = [(c, t) for c, t in idle if t >= cutoff]
            for connection, released in idle:
                if released < cutoff:
                    _close(connection)
                    closed += 1
            if keep:
                self._idle[path] = keep
            else:
                del self._idle[path]
        return closed

    def _schedule_pruning(self) -> None:
        """Prune every ``PRUNE_INTERVAL_S`` on the router's loop once the channel is in use."""
        if self._pruning is None:
            self._pruning = asyncio.get_running_loop().call_later(PRUNE_INTERVAL_S, self._prune_tick)

    def _prune_tick(self) -> None:
        self.prune()
        self._pruning = asyncio.get_running_loop().call_later(PRUNE_INTERVAL_S, self._prune_tick)


def _close(connection: Connection) -> None:
    with contextlib.suppress(Exception):
        connection[1].close()
