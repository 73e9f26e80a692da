"""The keep-alive transport under the SDK's client, against raw HTTP servers on loopback:
framing (length, chunked, close-delimited, interim), reuse and expiry of connections, and
the HTTP library's error types for each way a server can fail."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx2
import pytest

from mils.adapters.http_transport import KeepAliveTransport


class Server:
    """A raw HTTP server: `answer` maps each request's path to the bytes written back."""

    def __init__(self, answer: Callable[[str], bytes | None]) -> None:
        self.answer = answer
        self.connections = 0
        self.requests: list[tuple[str, bytes]] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                path = lines[0].split(" ")[1]
                sizes = [h.split(":")[1] for h in lines if h.lower().startswith("content-length")]
                length = int(sizes[0]) if sizes else 0
                self.requests.append((path, await reader.readexactly(length)))
                reply = self.answer(path)
                if reply is None:  # hang up without a word
                    break
                writer.write(reply)
                await writer.drain()
                if b"close" in reply.split(b"\r\n\r\n")[0].lower() or path.startswith("/once"):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def listening(handle: Handler) -> AsyncIterator[str]:
    """Serve `handle` on loopback; on exit, every connection it accepted is closed and its
    handler ended (none is left for the garbage collector)."""
    handlers: set[asyncio.Task[None]] = set()

    async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            await handle(reader, writer)
        finally:
            writer.close()

    listener = await asyncio.start_server(tracked, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}"
    finally:
        listener.close()
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)


@asynccontextmanager
async def serving(answer: Callable[[str], bytes | None]) -> AsyncIterator[tuple[Server, str]]:
    server = Server(answer)
    async with listening(server.handle) as url:
        yield server, url


@asynccontextmanager
async def client(**transport: float) -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(
        transport=KeepAliveTransport(**transport), timeout=httpx2.Timeout(5.0)
    ) as http:
        yield http


def ok(body: bytes, *headers: str) -> bytes:
    head = ["HTTP/1.1 200 OK", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def test_one_connection_carries_many_requests_and_their_bodies() -> None:
    async with serving(lambda path: ok(path.encode())) as (server, url), client() as http:
        for i in range(20):
            response = await http.post(f"{url}/r{i}", content=b"x" * i)
            assert response.status_code == 200 and response.text == f"/r{i}"
    assert server.connections == 1
    assert [body for _, body in server.requests] == [b"x" * i for i in range(20)]


async def test_concurrent_requests_each_get_their_own_response() -> None:
    async with serving(lambda path: ok(path.encode())) as (server, url), client() as http:
        replies = await asyncio.gather(*(http.get(f"{url}/c{i}") for i in range(50)))
        assert [r.text for r in replies] == [f"/c{i}" for i in range(50)]
        again = await asyncio.gather(*(http.get(f"{url}/d{i}") for i in range(50)))
        assert [r.text for r in again] == [f"/d{i}" for i in range(50)]
    assert server.connections == 50  # the second round reused the first round's connections


async def test_chunked_gzip_and_close_delimited_bodies_are_read_whole() -> None:
    payload = b'{"choices": []}' * 100
    packed = gzip.compress(payload)
    assert len(packed) > 30  # three chunks, none empty (an empty one ends the body)
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n\r\n"
        + b"".join(
            f"{len(piece):x};ext=1\r\n".encode() + piece + b"\r\n"
            for piece in (packed[:10], packed[10:30], packed[30:])
        )
        + b"0\r\nX-Trailer: t\r\n\r\n"
    )
    interim = b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"after interim")
    close_delimited = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end"
    replies = {"/chunked": chunked, "/interim": interim, "/once-close": close_delimited}
    async with serving(replies.get) as (server, url), client() as http:
        assert (await http.get(f"{url}/chunked")).content == payload
        assert (await http.get(f"{url}/interim")).text == "after interim"
        assert server.connections == 1
        assert (await http.get(f"{url}/once-close")).text == "until the end"
        assert (await http.get(f"{url}/interim")).text == "after interim"
    assert server.connections == 2  # the close-delimited body ended its connection


async def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    async with serving(lambda path: ok(b"fine")) as (server, url), client() as http:
        assert (await http.get(f"{url}/once-a")).text == "fine"  # the server hangs up after
        await asyncio.sleep(0.05)
        assert (await http.get(f"{url}/once-b")).text == "fine"
    assert server.connections == 2


async def test_connection_close_is_honoured_and_idle_connections_expire() -> None:
    replies = {"/close": ok(b"bye", "Connection: close"), "/keep": ok(b"kept")}
    async with serving(replies.get) as (server, url), client(keepalive_expiry=0.1) as http:
        await http.get(f"{url}/close")
        await http.get(f"{url}/keep")
        await http.get(f"{url}/keep")
        assert server.connections == 2
        await asyncio.sleep(0.2)
        await http.get(f"{url}/keep")
    assert server.connections == 3


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (None, httpx2.RemoteProtocolError),  # hangs up before answering
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\ntruncated", httpx2.RemoteProtocolError),
        (b"SMTP ready\r\n\r\n", httpx2.RemoteProtocolError),
        (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", httpx2.RemoteProtocolError),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            httpx2.RemoteProtocolError,
        ),
    ],
)
async def test_a_broken_reply_is_a_protocol_error(
    reply: bytes | None, error: type[Exception]
) -> None:
    async with serving(lambda path: reply) as (_, url), client() as http:
        with pytest.raises(error):
            await http.get(f"{url}/once")


async def test_silence_is_a_read_timeout_and_a_closed_port_a_connect_error() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # answers nothing; returns when the client gives up and closes

    async with listening(silent) as url, client() as http:
        with pytest.raises(httpx2.ReadTimeout):
            await http.get(f"{url}/", timeout=httpx2.Timeout(5.0, read=0.2))
    async with client() as http:
        with pytest.raises(httpx2.ConnectError):
            await http.get(f"{url}/")  # nothing listens there now


async def test_a_request_cancelled_mid_reply_does_not_leave_its_connection_for_another() -> None:
    release = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ")[1].decode()
                if path == "/slow":
                    await release.wait()
                writer.write(ok(path.encode()))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass

    async with listening(handle) as url, client() as http:
        slow = asyncio.create_task(http.get(f"{url}/slow"))
        await asyncio.sleep(0.05)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        release.set()
        # The late reply to /slow must not be taken for this request's.
        assert (await http.get(f"{url}/fast")).text == "/fast"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost (made with the openssl command line)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_https_is_verified_against_the_given_authorities(
    certificate: tuple[Path, Path],
) -> None:
    cert, key = certificate
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    server = Server(lambda path: ok(b"secure " + path.encode()))
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0, ssl=server_tls)
    url = f"https://localhost:{listener.sockets[0].getsockname()[1]}"
    try:
        trusting = ssl.create_default_context(cafile=str(cert))
        async with httpx2.AsyncClient(transport=KeepAliveTransport(ssl_context=trusting)) as http:
            assert (await http.get(f"{url}/a")).text == "secure /a"
            assert (await http.get(f"{url}/b")).text == "secure /b"
        assert server.connections == 1
        async with client() as http:  # the default authorities do not know this certificate
            with pytest.raises(httpx2.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await http.get(f"{url}/c")
    finally:
        listener.close()


async def test_a_streamed_request_body_is_sent_whole_with_its_length() -> None:
    async def parts() -> AsyncIterator[bytes]:
        for part in (b"first,", b"second,", b"third"):
            yield part

    async with serving(lambda path: ok(b"got it")) as (server, url), client() as http:
        response = await http.post(f"{url}/upload", content=parts())
        assert response.text == "got it"
        assert (await http.post(f"{url}/again", content=b"x")).text == "got it"
    assert server.requests == [("/upload", b"first,second,third"), ("/again", b"x")]
    assert server.connections == 1


async def test_a_chunked_body_arriving_a_few_bytes_at_a_time_is_read_whole() -> None:
    chunks = [bytes([65 + i]) * (i * 37 % 300 + 1) for i in range(40)]
    reply = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"".join(f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in chunks)
        + b"0\r\n\r\n"
    )

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                await reader.readuntil(b"\r\n\r\n")
                for at in range(0, len(reply), 7):
                    writer.write(reply[at : at + 7])
                    await writer.drain()
                    await asyncio.sleep(0)

    async with listening(trickle) as url, client() as http:
        assert (await http.get(f"{url}/a")).content == b"".join(chunks)
        assert (await http.get(f"{url}/b")).content == b"".join(chunks)  # same connection


async def test_the_read_timeout_counts_from_the_last_bytes_that_arrived() -> None:
    """A reply arriving slowly over longer than the read timeout is read whole, as long as
    no gap between its bytes is that long; a reply that stalls halfway times out."""
    body = b"x" * 20
    reply = ok(body)
    head = len(reply) - len(body)

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                path = (await reader.readuntil(b"\r\n\r\n")).split(b" ")[1]
                writer.write(reply[:head])
                for at in range(head, len(reply)):  # a byte every 0.05 s: 1 s in all
                    if path == b"/stall" and at == head + 10:
                        await reader.read()  # silent until the client gives up
                        return
                    await asyncio.sleep(0.05)
                    writer.write(reply[at : at + 1])

    async with listening(slow) as url, client() as http:
        timeout = httpx2.Timeout(5.0, read=0.5)
        assert (await http.get(f"{url}/slow", timeout=timeout)).content == body
        with pytest.raises(httpx2.ReadTimeout):
            await http.get(f"{url}/stall", timeout=timeout)
