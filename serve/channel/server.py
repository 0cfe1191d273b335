"""The model replica's end of the channel: a Unix socket server that runs ``ModelCall``s.

Each connection carries one call at a time (the router keeps idle connections for the next one).
A client that closes its connection mid-call cancels the call, as a cancelled handle call would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any, AsyncIterator, Callable

from common.call import ModelCall
from serve.channel.frames import BUSY, CHUNKS, END, encode, read_message

logger = logging.getLogger(__name__)

Batches = Callable[[ModelCall], AsyncIterator[list[dict[str, Any]]]]


class ChannelServer:
    def __init__(self, path: Path, run: Batches, max_ongoing_requests: int) -> None:
        self.path, self.run, self.limit = path, run, max_ongoing_requests
        self.in_flight = 0
        self._server: asyncio.AbstractServer | None = None
        self._idle: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(self._connection, path=str(self.path))
        self.path.chmod(0o600)

    async def stop(self, drain_timeout_s: float) -> None:
        """Accept nothing new, close idle connections, and let calls in flight finish (bounded)."""
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._idle):
            writer.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(drain_timeout_s):
                while self.in_flight:
                    await asyncio.sleep(0.05)
        self.path.unlink(missing_ok=True)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # One read is always outstanding: the next call, or EOF. While a call runs, EOF means the
        # router closed the connection (its client left), which cancels the call.
        pending = asyncio.ensure_future(read_message(reader))
        try:
            while True:
                self._idle.add(writer)
                try:
                    call = await pending
                finally:
                    self._idle.discard(writer)
                pending = asyncio.ensure_future(read_message(reader))
                if self.in_flight >= self.limit:
                    writer.write(encode((BUSY,)))
                    continue
                if not await self._serve(call, writer, pending):
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return  # the router closed the connection
        finally:
            pending.cancel()
            writer.close()

    async def _serve(self, call: ModelCall, writer: asyncio.StreamWriter, next_read: asyncio.Future[Any]) -> bool:
        """Run one call, sending its batches; False when the client left mid-call (the call is cancelled)."""
        self.in_flight += 1
        send = asyncio.ensure_future(self._send(call, writer))
        try:
            await asyncio.wait({send, next_read}, return_when=asyncio.FIRST_COMPLETED)
            if not send.done():  # the router sends nothing mid-call: this is EOF
                send.cancel()
                with contextlib.suppress(BaseException):
                    await send
                return False
            send.result()
            return True
        finally:
            self.in_flight -= 1

    async def _send(self, call: ModelCall, writer: asyncio.StreamWriter) -> None:
        async with contextlib.aclosing(self.run(call)) as batches:
            async for batch in batches:
                writer.write(encode((CHUNKS, batch)))
                await writer.drain()
        writer.write(encode((END,)))
        await writer.drain()
