"""The front door's relay: client connections in, router connections out, nothing accepted lost.

A request is read whole (head and body) before it goes to a router replica, so when the router's
connection fails before its answer starts (refused: no router listens, it is restarting; reset or
closed: it died with the request) the relay sends the same request again, on a new connection, until
``retry_timeout_s`` has passed. Then the client gets a 503 ``unavailable_error`` with Retry-After. Our
API has no request that is unsafe to send twice: inference has no side effects, and loading or
unloading a model twice leaves it as once.

Once the answer has started, its bytes are relayed as they come. When the router's connection breaks
mid-answer, an event stream gets a final ``data: {"error": ...}`` event and a proper end; any other
body is cut (the client's HTTP library reports an incomplete body). When the client goes away
mid-answer, the router's connection is dropped, so the router cancels the request in its engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Callable

from common.errors import HeaderFieldsTooLargeError, PayloadTooLargeError, RouterUnavailableError, ServingError
from common.sse import SENTINEL_HEADER, sse_event
from serve.front_door.http1 import (
    MAX_HEAD_BYTES, Request, Response, UpstreamBroke, header, parse_request, parse_response, read_chunked,
)

logger = logging.getLogger(__name__)

RETRY_FIRST_WAIT_S = 0.05
RETRY_MAX_WAIT_S = 1.0
COPY_BYTES = 64 * 1024
MAX_IDLE_UPSTREAM = 64
# what a broken connection to the router raises (reset, refused, closed mid-message)
UPSTREAM_ERRORS = (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, UpstreamBroke, ValueError)


@dataclass(frozen=True)
class RelaySettings:
    upstream_host: str
    upstream_port: int
    retry_timeout_s: float = 30.0
    max_body_bytes: int = 25 * 1024 * 1024
    idle_timeout_s: float = 75.0
    max_waiting: int = 1024  # requests waiting for a router replica at once; beyond, 503 at once


class Upstream:
    """Keep-alive connections to the router replicas' listener (``SO_REUSEPORT``: the kernel picks a replica)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def connect(self, reuse: bool = True) -> tuple[tuple[asyncio.StreamReader, asyncio.StreamWriter], bool]:
        """A kept-alive connection (when ``reuse``) or a new one, and whether it was kept alive."""
        while self.idle and reuse:
            reader, writer = self.idle.pop()
            if not writer.is_closing() and not reader.at_eof():
                return (reader, writer), True
            writer.close()
        reader, writer = await asyncio.open_connection(self.host, self.port, limit=MAX_HEAD_BYTES)
        _no_delay(writer.transport)
        return (reader, writer), False

    def release(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], reusable: bool) -> None:
        if reusable and len(self.idle) < MAX_IDLE_UPSTREAM and not conn[1].is_closing():
            self.idle.append(conn)
        else:
            conn[1].transport.abort()

    def close(self) -> None:
        for _, writer in self.idle:
            writer.transport.abort()
        self.idle.clear()


class ClientProtocol(asyncio.StreamReaderProtocol):
    """A client connection; its end (FIN or reset) cancels the exchange in progress, dropping the router's
    connection, so the router cancels the request in its engine."""

    def __init__(self, relay: "Relay") -> None:
        super().__init__(asyncio.StreamReader(limit=MAX_HEAD_BYTES), self._connected)
        self.relay = relay
        self.task: asyncio.Task[Any] | None = None
        self.exchanging = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        _no_delay(transport)
        super().connection_made(transport)

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.task = asyncio.current_task()
        await self.relay.serve_connection(self, reader, writer)

    def _client_gone(self) -> None:
        if self.exchanging and self.task is not None:
            self.task.cancel()

    def eof_received(self) -> bool:
        self._client_gone()
        return bool(super().eof_received())

    def connection_lost(self, exc: Exception | None) -> None:
        self._client_gone()
        super().connection_lost(exc)


# what the relay counts (``on_event``): a request sent again after its router failed before answering, a 503
# the relay answered itself (no router in time, too many waiting), a stream it ended with an error event
EVENTS = ("resent", "unavailable", "stream_cut")


class Relay:
    """Serves client connections on a listening socket; ``start`` then ``stop``."""

    def __init__(self, settings: RelaySettings, on_event: Callable[[str], None] = lambda event: None) -> None:
        self.settings, self.on_event = settings, on_event
        self.upstream = Upstream(settings.upstream_host, settings.upstream_port)
        self.server: asyncio.Server | None = None
        self.connections: set[asyncio.Task[Any]] = set()
        self.outage_since: float | None = None
        self.waiting = 0

    async def start(self, sock: Any) -> None:
        self.server = await asyncio.get_running_loop().create_server(lambda: ClientProtocol(self), sock=sock)

    async def stop(self, drain_timeout_s: float) -> None:
        """Stop accepting; requests in flight finish (bounded), idle connections close."""
        if self.server is None:
            return
        self.server.close()
        busy = [t for t in self.connections if not t.done()]
        if busy:
            await asyncio.wait(busy, timeout=drain_timeout_s)
        for task in self.connections:
            task.cancel()
        self.upstream.close()

    async def serve_connection(self, protocol: ClientProtocol, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.connections.add(task)
        try:
            while self.server is not None and self.server.is_serving():
                request = await self._next_request(reader, writer)
                if request is None:
                    return
                protocol.exchanging = True
                try:
                    keep_alive = await self.exchange(request, writer)
                finally:
                    protocol.exchanging = False
                if not (keep_alive and request.keep_alive):
                    return
        except asyncio.CancelledError:
            pass  # the client left mid-exchange, or the relay is stopping
        except (ConnectionError, OSError):
            pass
        finally:
            self.connections.discard(task)
            writer.close()  # sends what is still buffered, then closes

    async def _next_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Request | None:
        """The next request with its body, or None when the client is done (closed, idle, malformed)."""
        try:
            async with asyncio.timeout(self.settings.idle_timeout_s):
                raw = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            return None
        except asyncio.LimitOverrunError:
            await _answer_error(writer, HeaderFieldsTooLargeError(f"request headers over {MAX_HEAD_BYTES} bytes"))
            return None
        try:
            request = parse_request(raw)
            async with asyncio.timeout(self.settings.idle_timeout_s):  # a body that trickles in is dropped
                await self._read_body(request, reader, writer)
        except ServingError as err:  # malformed, or too large
            await _answer_error(writer, err)
            return None
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError, TimeoutError):
            return None
        return request

    async def _read_body(self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        limit = self.settings.max_body_bytes
        if request.content_length > limit:
            raise PayloadTooLargeError(f"request body of {request.content_length} bytes is over the limit of {limit}")
        if request.expects_continue and (request.chunked or request.content_length):
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if request.chunked:
            request.body = await read_chunked(reader, limit)
        elif request.content_length:
            request.body = await reader.readexactly(request.content_length)

    async def exchange(self, request: Request, client: asyncio.StreamWriter) -> bool:
        """Send ``request`` to a router replica (again, until one answers) and relay its answer.
        True when the client's connection can carry another request."""
        deadline = time.monotonic() + self.settings.retry_timeout_s
        wait, reuse = RETRY_FIRST_WAIT_S, True
        payload = request.encode()
        while True:
            conn, reused = None, False
            try:
                conn, reused = await self.upstream.connect(reuse)
                conn[1].write(payload)
                response = parse_response(await conn[0].readuntil(b"\r\n\r\n"))
                while response.status == 100:  # an interim answer; the real one follows
                    response = parse_response(await conn[0].readuntil(b"\r\n\r\n"))
                break
            except UPSTREAM_ERRORS as exc:
                if conn is not None:
                    self.upstream.release(conn, reusable=False)
                if reused:  # a kept-alive connection the router had closed meanwhile: at once, on a new one
                    reuse = False
                    continue
                self._outage(exc, ended=False)
                if time.monotonic() + wait > deadline or self.waiting >= self.settings.max_waiting:
                    self.on_event("unavailable")
                    await _answer_error(client, RouterUnavailableError("no router replica answered; retry later", retry_after_s=2))
                    return True
                await self._wait(wait)
                wait = min(wait * 2, RETRY_MAX_WAIT_S)
                self.on_event("resent")
            except BaseException:  # the client left (cancelled): the router's connection goes with it
                if conn is not None:
                    self.upstream.release(conn, reusable=False)
                raise
        self._outage(None, ended=True)
        return await self._relay_answer(request, response, conn, client)

    async def _wait(self, seconds: float) -> None:
        """A pause before the next try, counted: at most ``max_waiting`` requests wait (with their bodies)."""
        self.waiting += 1
        try:
            await asyncio.sleep(seconds)
        finally:
            self.waiting -= 1

    async def _relay_answer(self, request: Request, response: Response, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                            client: asyncio.StreamWriter) -> bool:
        reusable, dechunk = False, False
        try:
            close = not (request.keep_alive and (response.chunked or response.content_length is not None
                                                  or not response.has_body(request.method)))
            dechunk = response.chunked and request.version == b"HTTP/1.0"  # 1.0 clients read until the close
            close = close or dechunk
            client.write(response.encode_head(close, dechunk))
            if response.has_body(request.method):
                await _copy_body(response, conn[0], client, dechunk)
            reusable = response.keep_alive
            return not close
        except UPSTREAM_ERRORS as exc:
            if isinstance(exc, (ConnectionError, OSError)) and client.is_closing():
                return False  # the client left; the router's connection is dropped below
            if response.event_stream and response.chunked:
                error = RouterUnavailableError("the router replica serving this stream stopped before it ended; "
                                               "send the request again")
                event = sse_event({"error": error.to_dict()})
                sentinel = header(response.headers, SENTINEL_HEADER.encode())
                event += b"data: %s\n\n" % sentinel if sentinel else b""
                self.on_event("stream_cut")
                client.write(event if dechunk else b"%x\r\n%s\r\n0\r\n\r\n" % (len(event), event))
                with contextlib.suppress(ConnectionError, OSError):
                    await client.drain()
                return not dechunk
            return False  # a cut body: the client's HTTP library sees it incomplete
        finally:
            self.upstream.release(conn, reusable)

    def _outage(self, exc: Exception | None, ended: bool) -> None:
        """One log line when the routers become unreachable and one when they answer again."""
        if ended:
            if self.outage_since is not None:
                logger.info("router replicas answer again after %.1fs", time.monotonic() - self.outage_since)
                self.outage_since = None
        elif self.outage_since is None:
            self.outage_since = time.monotonic()
            logger.warning("no router replica answers on %s:%d (%s): requests wait up to %gs for one",
                           self.settings.upstream_host, self.settings.upstream_port, type(exc).__name__,
                           self.settings.retry_timeout_s)


def _no_delay(transport: asyncio.BaseTransport) -> None:
    """Small writes leave at once (asyncio sets TCP_NODELAY only on sockets it created with IPPROTO_TCP)."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def _copy_body(response: Response, upstream: asyncio.StreamReader, client: asyncio.StreamWriter,
                     dechunk: bool = False) -> None:
    """The response body, relayed as it arrives: chunk by chunk (only the data with ``dechunk``), by
    length, or until the router closes."""
    if response.chunked:
        while True:
            line = await upstream.readuntil(b"\r\n")
            size = int(line.split(b";", 1)[0], 16)
            if size == 0:
                trailers = line
                while (part := await upstream.readuntil(b"\r\n")) != b"\r\n":
                    trailers += part
                if not dechunk:
                    client.write(trailers + b"\r\n")
                    await client.drain()
                return
            data = await upstream.readexactly(size + 2)
            client.write(data[:-2] if dechunk else line + data)
            await client.drain()
    remaining = response.content_length
    while remaining is None or remaining > 0:
        data = await upstream.read(COPY_BYTES if remaining is None else min(remaining, COPY_BYTES))
        if not data:
            if remaining is None:
                return
            raise UpstreamBroke("response body cut short")
        client.write(data)
        await client.drain()
        if remaining is not None:
            remaining -= len(data)


async def _answer_error(writer: asyncio.StreamWriter, error: ServingError) -> None:
    """An answer of the relay's own, in the error contract's shape, with the error's headers (Retry-After)."""
    body = json.dumps({"error": error.to_dict()}).encode()
    status = HTTPStatus(error.status_code)
    extra = b"".join(b"%s: %s\r\n" % (name.lower().encode(), value.encode()) for name, value in error.headers().items())
    writer.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n%s"
                 % (status.value, status.phrase.encode(), len(body), extra, body))
    with contextlib.suppress(ConnectionError, OSError):
        await writer.drain()

