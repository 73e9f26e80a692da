"""A lean HTTP/1.1 keep-alive transport for the OpenAI SDK's HTTP client.

At hundreds of requests in flight the generic connection pool under the SDK costs more CPU
per request than everything else the engine does for a step: it probes every idle socket
when any request starts or ends, and routes each read and write through several layers of
stream abstractions. This transport speaks HTTP/1.1 on `asyncio.Protocol` connections kept
per (scheme, host, port): a request takes the most recently used idle connection (closed
ones have already left the pool: the event loop reports a close as it happens), writes the
request in one call and is woken once, when the whole response has arrived.

It plugs in as the client's transport (`httpx2.AsyncClient(transport=...)`), so everything
above it is the SDK's own: headers, auth, timeouts, response decoding (gzip included) and
error types. Its errors are the HTTP library's:

    connect refused, DNS, TLS     -> ConnectError          (ConnectTimeout past `connect`)
    no byte for `read` seconds    -> ReadTimeout
    reset while reading           -> ReadError
    closed before the response    -> RemoteProtocolError   (a truncated body included)
    a response it cannot parse    -> RemoteProtocolError

What it does not do: HTTP/2, pipelining, `Expect: 100-continue`, proxies (a client given
a transport ignores HTTP_PROXY and the like, so the generator does not use this one for a
URL the environment proxies) and response streaming (the whole body is read before the
response is returned: the engine reads completions whole).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque

import httpx2

__all__ = ["KeepAliveTransport", "RawResponse"]

DEFAULT_KEEPALIVE_EXPIRY = 4.0
"""Seconds an idle connection is kept: under the 5 s idle timeout common in servers
(uvicorn, vLLM), so a request rarely meets a connection the server is closing."""

_MAX_HEADER_BYTES = 64 * 1024
_NO_BODY_STATUS = frozenset({204, 304})


class RawResponse:
    """A response as it came (parsed as it arrives): status, reason, header lines, then the
    body as the headers say, not decoded."""

    __slots__ = (
        "body",
        "chunked",
        "chunks",
        "headers",
        "keep_alive",
        "length",
        "reason",
        "status",
    )

    def __init__(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        self.status, self.reason, self.headers = status, reason, headers
        self.body = b""
        self.length: int | None = None
        self.chunked = False
        self.chunks: list[bytes] = []
        """A chunked body's chunks, taken out of the buffer as each arrives whole."""
        self.keep_alive = True


class _Connection(asyncio.Protocol):
    """One keep-alive connection: a request at a time, its response parsed as it arrives."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._buffer = bytearray()
        self._response: RawResponse | None = None
        self._waiter: asyncio.Future[RawResponse] | None = None
        self._head_request = False
        self._timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        self._last_data = 0.0
        """When the last bytes arrived (event-loop time), while a read timeout runs."""
        self._read_timeout: float | None = None

    # -- asyncio.Protocol --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:  # bytes nobody asked for: the connection is unusable
            self.close()
            return
        self._buffer += data
        if self._timer is not None:
            self._last_data = self._loop.time()
        try:
            response = self._parse()
        except httpx2.RemoteProtocolError as exc:
            self._fail(exc)
            self.close()
            return
        if response is not None:
            self._finish(response)

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost ends the response

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        response = self._response
        delimited_by_close = (
            response is not None and not response.chunked and response.length is None
        )
        if delimited_by_close and exc is None and response is not None:
            response.body = bytes(self._buffer)
            response.keep_alive = False
            self._finish(response)
            return
        if exc is not None:
            self._fail(httpx2.ReadError(f"connection lost: {exc}"))
        elif response is None:
            self._fail(httpx2.RemoteProtocolError("server disconnected without a response"))
        else:
            self._fail(httpx2.RemoteProtocolError("server closed the connection mid-response"))

    # -- one exchange --------------------------------------------------------------

    async def exchange(self, data: bytes, *, head: bool, read_timeout: float | None) -> RawResponse:
        """Send one request's bytes; the parsed response once whole."""
        assert self.transport is not None and self._waiter is None
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        self._head_request = head
        self._read_timeout = read_timeout
        self._arm_timer()
        self.transport.write(data)
        try:
            return await waiter
        except BaseException:
            self.close()  # cancelled or failed mid-exchange: the stream's state is unknown
            raise
        finally:
            self._disarm_timer()

    def close(self) -> None:
        self.closed = True
        self._disarm_timer()
        if self.transport is not None:
            self.transport.close()

    def _finish(self, response: RawResponse) -> None:
        waiter = self._waiter
        self._waiter, self._response = None, None
        self._disarm_timer()
        if self._buffer:  # more than the response: nothing may follow it unasked
            response.keep_alive = False
            self._buffer.clear()
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    def _fail(self, exc: Exception) -> None:
        waiter = self._waiter
        self._waiter, self._response = None, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def _arm_timer(self) -> None:
        """Start the read timeout. Bytes arriving only move `_last_data`: the timer, when
        it fires, is set again for the time left (one timer per exchange, not per read)."""
        if self._read_timeout is None:
            return
        self._disarm_timer()
        self._last_data = self._loop.time()
        self._timer = self._loop.call_at(self._last_data + self._read_timeout, self._check_timeout)

    def _disarm_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check_timeout(self) -> None:
        assert self._read_timeout is not None
        due = self._last_data + self._read_timeout
        if self._loop.time() < due:
            self._timer = self._loop.call_at(due, self._check_timeout)
            return
        self._timer = None
        self._fail(httpx2.ReadTimeout(f"no data for {self._read_timeout} s"))
        self.close()

    # -- parsing -------------------------------------------------------------------

    def _parse(self) -> RawResponse | None:
        """The response, once whole; None while more bytes are needed."""
        buffer = self._buffer
        response = self._response
        if response is None:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > _MAX_HEADER_BYTES:
                    raise httpx2.RemoteProtocolError("response headers too long")
                return None
            response = _parse_head(bytes(buffer[:end]), head_request=self._head_request)
            del buffer[: end + 4]
            if 100 <= response.status < 200:  # an interim response: the real one follows
                return self._parse()
            self._response = response
        if response.chunked:
            return self._parse_chunked(response)
        if response.length is None:
            return None  # delimited by the close
        if len(buffer) < response.length:
            return None
        response.body = bytes(buffer[: response.length])
        del buffer[: response.length]
        return response

    def _parse_chunked(self, response: RawResponse) -> RawResponse | None:
        """Take the chunks that have arrived whole out of the buffer; the response once
        the last chunk and the trailers (ignored) have."""
        buffer = self._buffer
        while (line_end := buffer.find(b"\r\n")) >= 0:
            try:
                size = int(bytes(buffer[:line_end]).split(b";", 1)[0], 16)
            except ValueError:
                raise httpx2.RemoteProtocolError("malformed chunk size") from None
            if size == 0:  # the last chunk; then trailers and an empty line
                end = buffer.find(b"\r\n\r\n", line_end)
                if end < 0:
                    return None
                response.body = b"".join(response.chunks)
                del buffer[: end + 4]
                return response
            start = line_end + 2
            if len(buffer) < start + size + 2:
                return None
            response.chunks.append(bytes(buffer[start : start + size]))
            del buffer[: start + size + 2]
        return None


def _parse_head(raw: bytes, *, head_request: bool) -> RawResponse:
    """Status line and headers; how the body is delimited."""
    lines = raw.split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    code, _, reason = rest.partition(b" ")
    if not version.startswith(b"HTTP/1.") or not code.isdigit():
        raise httpx2.RemoteProtocolError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip():
            raise httpx2.RemoteProtocolError(f"malformed header line: {line[:80]!r}")
        headers.append((name, value.strip()))
    response = RawResponse(int(code), reason, headers)
    connection = b""
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"content-length":
            if not value.isdigit():
                raise httpx2.RemoteProtocolError(f"bad Content-Length: {value[:40]!r}")
            response.length = int(value)
        elif lowered == b"transfer-encoding":
            response.chunked = value.lower().endswith(b"chunked")
        elif lowered == b"connection":
            connection = value.lower()
    response.keep_alive = (
        b"close" not in connection if version == b"HTTP/1.1" else b"keep-alive" in connection
    )
    if head_request or response.status in _NO_BODY_STATUS or 100 <= response.status < 200:
        response.length, response.chunked = 0, False
    elif response.chunked:
        response.length = None
    return response


_Origin = tuple[bytes, str, int]


class KeepAliveTransport(httpx2.AsyncBaseTransport):
    """HTTP/1.1 with keep-alive, per origin; see the module's docstring.

    Args:
        ssl_context: for https origins (default: the HTTP library's, which verifies).
        keepalive_expiry: seconds an idle connection is kept.
    """

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        keepalive_expiry: float = DEFAULT_KEEPALIVE_EXPIRY,
    ) -> None:
        self._ssl_context = ssl_context
        self._expiry = keepalive_expiry
        self._idle: dict[_Origin, deque[_Connection]] = {}
        self._busy: set[_Connection] = set()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self.exchange(request)
        return httpx2.Response(
            response.status,
            headers=response.headers,
            stream=httpx2.ByteStream(response.body),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": response.reason},
        )

    async def exchange(self, request: httpx2.Request) -> RawResponse:
        """Send `request`; the whole response as it came, its body not decoded (below
        the HTTP library's response: for a caller that reads plain replies itself)."""
        url = request.url
        scheme = url.raw_scheme
        if scheme not in (b"http", b"https"):
            raise httpx2.UnsupportedProtocol(f"unsupported URL scheme {url.scheme!r}")
        port = url.port or (443 if scheme == b"https" else 80)
        origin: _Origin = (scheme, url.host, port)
        timeouts = request.extensions.get("timeout", {})
        # A body given whole was read when the request was made (this returns it); one
        # streamed, or copied onto a redirect's request, is read now.
        body = await request.aread()
        data = _request_bytes(request, body)
        connection = self._take(origin) or await self._connect(origin, timeouts.get("connect"))
        self._busy.add(connection)
        try:
            response = await connection.exchange(
                data, head=request.method == "HEAD", read_timeout=timeouts.get("read")
            )
        finally:
            self._busy.discard(connection)
        if response.keep_alive and not connection.closed:
            connection.idle_since = time.monotonic()
            self._idle.setdefault(origin, deque()).append(connection)
        else:
            connection.close()
        return response

    def _take(self, origin: _Origin) -> _Connection | None:
        """The most recently used live idle connection to `origin`; expired ones close."""
        idle = self._idle.get(origin)
        if not idle:
            return None
        oldest_kept = time.monotonic() - self._expiry
        while idle and idle[0].idle_since < oldest_kept:
            idle.popleft().close()
        while idle:
            connection = idle.pop()
            if not connection.closed:
                return connection
        return None

    async def _connect(self, origin: _Origin, timeout: float | None) -> _Connection:
        scheme, host, port = origin
        tls: ssl.SSLContext | None = None
        if scheme == b"https":
            tls = self._ssl_context or httpx2.create_ssl_context()
            self._ssl_context = tls
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                _, connection = await loop.create_connection(
                    _Connection, host, port, ssl=tls, server_hostname=host if tls else None
                )
        except TimeoutError:
            raise httpx2.ConnectTimeout(
                f"connecting to {host}:{port} took over {timeout} s"
            ) from None
        except (OSError, ssl.SSLError) as exc:
            raise httpx2.ConnectError(f"cannot connect to {host}:{port}: {exc}") from exc
        return connection

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()
        for connection in list(self._busy):
            connection.close()


def _request_bytes(request: httpx2.Request, body: bytes) -> bytes:
    """The request line, headers and body, as one write. A body of unknown length (sent
    chunked by the HTTP library) has been read whole: it goes with its length."""
    lines = [request.method.encode() + b" " + request.url.raw_path + b" HTTP/1.1"]
    headers = request.headers
    if "transfer-encoding" in headers or (body and "content-length" not in headers):
        framing = (b"transfer-encoding", b"content-length")
        raw = [(k, v) for k, v in headers.raw if k.lower() not in framing]
        raw.append((b"Content-Length", str(len(body)).encode()))
    else:
        raw = headers.raw
    lines += [name + b": " + value for name, value in raw]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body
