"""Just enough HTTP/1.1 for a relay: where a request and a response start and end.

The front door never interprets what it relays beyond framing (Content-Length, chunked, until-close),
the few hop-by-hop headers it must own (Connection, Keep-Alive, Expect, Transfer-Encoding of a request
body) and whether a response is an event stream. Request bodies are read whole (bounded by
``router_config.max_request_body_bytes``) so a request can be sent again; response bodies are relayed
as they come, one chunk at a time, so streams keep their pace.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from common.errors import InvalidRequestError, PayloadTooLargeError

MAX_HEAD_BYTES = 64 * 1024
# hop-by-hop headers (RFC 9110 7.6.1): they describe one connection, not the message
HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade",
                        b"transfer-encoding", b"expect", b"content-length"})


class UpstreamBroke(Exception):
    """The router's connection ended or failed before its response was complete."""


@dataclass
class Request:
    method: bytes
    target: bytes
    version: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    keep_alive: bool = True
    expects_continue: bool = False
    chunked: bool = False
    content_length: int = 0

    def encode(self) -> bytes:
        """The request as the router gets it: the client's end-to-end headers, the body's length, keep-alive."""
        lines = [b"%s %s HTTP/1.1" % (self.method, self.target)]
        lines += [b"%s: %s" % (name, value) for name, value in self.headers if name.lower() not in HOP_BY_HOP]
        if self.body or self.method not in (b"GET", b"HEAD", b"DELETE", b"OPTIONS"):
            lines.append(b"content-length: %d" % len(self.body))
        return b"\r\n".join(lines) + b"\r\n\r\n" + self.body


@dataclass
class Response:
    status: int
    start: bytes  # the status line as the router sent it
    chunked: bool = False
    content_length: int | None = None
    keep_alive: bool = True
    event_stream: bool = False
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    def has_body(self, method: bytes) -> bool:
        return method != b"HEAD" and self.status >= 200 and self.status not in (204, 304)

    def encode_head(self, close: bool, dechunk: bool) -> bytes:
        """The head for the client: the router's end-to-end headers, this connection's own."""
        dropped = (b"connection", b"keep-alive", b"transfer-encoding") if dechunk else (b"connection", b"keep-alive")
        lines = [self.start, *(b"%s: %s" % (n, v) for n, v in self.headers if n not in dropped)]
        if close:
            lines.append(b"connection: close")
        return b"\r\n".join(lines) + b"\r\n\r\n"


def split_head(raw: bytes) -> tuple[list[bytes], list[tuple[bytes, bytes]]]:
    """The start line's parts and the (lower-cased name, value) header pairs of a message head."""
    lines = raw.rstrip(b"\r\n").split(b"\r\n")
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise InvalidRequestError("malformed header line")
        headers.append((name.lower(), value.strip()))
    return lines[0].split(b" ", 2), headers


def header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


def tokens(value: bytes | None) -> set[bytes]:
    return {t.strip().lower() for t in value.split(b",")} if value else set()


def parse_request(raw: bytes) -> Request:
    start, headers = split_head(raw)
    if len(start) != 3 or not start[2].startswith(b"HTTP/1."):
        raise InvalidRequestError("not an HTTP/1.x request line")
    method, target, version = start
    connection = tokens(header(headers, b"connection"))
    request = Request(method, target, version, headers,
                      keep_alive=b"close" not in connection and (version == b"HTTP/1.1" or b"keep-alive" in connection),
                      expects_continue=(header(headers, b"expect") or b"").lower() == b"100-continue",
                      chunked=b"chunked" in tokens(header(headers, b"transfer-encoding")))
    length = header(headers, b"content-length")
    if length is not None and not request.chunked:
        if not length.isdigit():
            raise InvalidRequestError("invalid Content-Length")
        request.content_length = int(length)
    return request


def parse_response(raw: bytes) -> Response:
    try:
        start, headers = split_head(raw)
        status = int(start[1])
    except (InvalidRequestError, ValueError, IndexError) as exc:
        raise UpstreamBroke("malformed response head") from exc
    length = header(headers, b"content-length")
    return Response(status, b" ".join(start),
                    chunked=b"chunked" in tokens(header(headers, b"transfer-encoding")),
                    content_length=int(length) if length is not None and length.isdigit() else None,
                    keep_alive=b"close" not in tokens(header(headers, b"connection")),
                    event_stream=(header(headers, b"content-type") or b"").startswith(b"text/event-stream"),
                    headers=headers)


async def read_chunked(reader: asyncio.StreamReader, limit: int) -> bytes:
    """A chunked request body, whole (trailers dropped); over ``limit`` bytes is a 413."""
    body = bytearray()
    while True:
        size = int(_chunk_size(await reader.readuntil(b"\r\n")), 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                pass
            return bytes(body)
        if len(body) + size > limit:
            raise PayloadTooLargeError(f"request body over {limit} bytes")
        body += (await reader.readexactly(size + 2))[:-2]


def _chunk_size(line: bytes) -> bytes:
    size = line.split(b";", 1)[0].strip()
    if not size or len(size) > 16 or any(c not in b"0123456789abcdefABCDEF" for c in size):
        raise InvalidRequestError("malformed chunk size")
    return size
