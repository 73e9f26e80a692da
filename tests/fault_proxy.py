"""A fault-injecting HTTP reverse proxy for OpenAI-compatible servers (tests, loopback only).

`FaultProxy` listens on 127.0.0.1 (a real socket) in front of an upstream chat server and,
for each `POST .../chat/completions`, draws one fault from seeded per-kind rates (the rest
pass through untouched). It counts what it injected, by kind, so a test can compare the
engine's own fault counts with the truth. Kinds:

    429            HTTP 429 with Retry-After
    500, 502, 503  HTTP errors with a JSON error body
    stall          reads the request, then says nothing until well past the client timeout
    reset          sends the headers and half the body, then resets the connection (RST)
    truncated      announces the full Content-Length, sends half the body, closes (FIN)
    non_json       200 with an HTML gateway page instead of JSON
    empty_choices  200 with valid JSON whose `choices` is []
    no_candidates  200 with a reply holding no list at all (prose)
    echo_prompt    200 whose reply is the user prompt sent back

It runs its own event loop in a daemon thread, so synchronous tests that
drive the `mils` CLI as a subprocess can use it as a context manager.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import struct
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Self

import httpx

__all__ = ["FAULT_KINDS", "FaultProxy", "spread"]

FAULT_KINDS = (
    "429",
    "500",
    "502",
    "503",
    "stall",
    "reset",
    "truncated",
    "non_json",
    "empty_choices",
    "no_candidates",
    "echo_prompt",
)
HOST = "127.0.0.1"
_REASONS = {
    200: "OK",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    404: "Not Found",
}


def spread(total: float, kinds: tuple[str, ...]) -> dict[str, float]:
    """Rates that share a total fault rate `total` equally among `kinds`."""
    return {kind: total / len(kinds) for kind in kinds}


class FaultProxy:
    """Reverse proxy injecting faults at seeded rates; `base_url` is what clients use.

    Args:
        upstream: base URL of the real server ("http://127.0.0.1:P/v1").
        rates: fault kind -> probability per chat request (sum at most 1).
        seed: seeds the draws, so a run of requests meets the same faults.
        stall_s: how long a stalled request hangs before the proxy drops it.
        retry_after_s: the Retry-After value sent with 429s.
        latency_s: delay added to every request (to slow a fast upstream down).
        reply: when set, replaces every passed-through reply's text with reply(prompt, n).
    """

    def __init__(
        self,
        upstream: str,
        *,
        rates: Mapping[str, float] | None = None,
        seed: int = 0,
        stall_s: float = 5.0,
        retry_after_s: float = 1.0,
        latency_s: float = 0.0,
        reply: Callable[[str, int], str] | None = None,
    ) -> None:
        self.rates = dict(rates or {})
        unknown = set(self.rates) - set(FAULT_KINDS)
        if unknown or sum(self.rates.values()) > 1.0:
            raise ValueError(f"bad fault rates {self.rates} (unknown kinds: {unknown})")
        self.upstream = upstream.rstrip("/")
        self.stall_s, self.retry_after_s, self.latency_s = stall_s, retry_after_s, latency_s
        self._reply = reply
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.injected: Counter[str] = Counter()
        self.chat_requests = 0
        self.authorizations: set[str] = set()
        """Authorization headers seen (so a test can check the key was sent, and where)."""
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}/v1"

    def statistics(self) -> dict[str, Any]:
        """A snapshot: chat requests seen and faults injected by kind."""
        with self._lock:
            return {"chat_requests": self.chat_requests, "injected": dict(self.injected)}

    # -- lifecycle ----------------------------------------------------------------

    def __enter__(self) -> Self:
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._serve, args=(ready,), daemon=True, name="fault-proxy"
        )
        self._thread.start()
        if not ready.wait(10) or not self.port:
            raise RuntimeError("fault proxy did not start")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def _serve(self, ready: threading.Event) -> None:
        asyncio.run(self._main(ready))

    async def _main(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with httpx.AsyncClient(timeout=60) as self._client:
            server = await asyncio.start_server(self._connection, HOST, 0)
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            async with server:
                await self._stop.wait()
                server.close()
                # Drop live keep-alive connections too, so serve/wait cannot hang.
                with contextlib.suppress(AttributeError):
                    server.close_clients()  # Python 3.13+

    # -- HTTP ---------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    break
                if not await self._handle(*request, writer):
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass  # the proxy is shutting down under a stalled request; the handler ends here
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _handle(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
        writer: asyncio.StreamWriter,
    ) -> bool:
        """Answer one request; False when the connection must close."""
        if not (method == "POST" and path.endswith("/chat/completions")):
            status, payload = await self._forward(method, path, headers, body)
            await _respond(writer, status, payload)
            return True
        if "authorization" in headers:
            with self._lock:
                self.authorizations.add(headers["authorization"])
        fault = self._draw()
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if fault in ("429", "500", "502", "503"):
            code = int(fault)
            extra = {"Retry-After": f"{self.retry_after_s:g}"} if code == 429 else {}
            error = {"error": {"message": f"injected {code}", "type": "fault_proxy"}}
            await _respond(writer, code, json.dumps(error).encode(), extra)
            return True
        if fault == "stall":
            await asyncio.sleep(self.stall_s)
            return False
        if fault == "non_json":
            page = b"<html><body><h1>502 Bad Gateway</h1>nginx</body></html>"
            await _respond(writer, 200, page, content_type="text/html")
            return True
        status, payload = await self._forward(method, path, headers, body)
        if status == 200 and (
            fault in ("empty_choices", "no_candidates", "echo_prompt") or self._reply is not None
        ):
            payload = self._rewrite(payload, body, fault)
        if fault == "truncated":
            await _respond(writer, status, payload, cut=len(payload) // 2)
            return False
        if fault == "reset":
            await _respond(writer, status, payload, cut=len(payload) // 2)
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return False
        await _respond(writer, status, payload)
        return True

    def _draw(self) -> str | None:
        with self._lock:
            self.chat_requests += 1
            u, edge = self._rng.random(), 0.0
            for kind, rate in self.rates.items():
                edge += rate
                if u < edge:
                    self.injected[kind] += 1
                    return kind
        return None

    def _rewrite(self, payload: bytes, request: bytes, fault: str | None) -> bytes:
        data = json.loads(payload)
        prompt = _user_prompt(request)
        if fault == "empty_choices":
            data["choices"] = []
        elif fault == "no_candidates":
            data["choices"][0]["message"]["content"] = "I'm sorry, I can't help with that."
        elif fault == "echo_prompt":
            data["choices"][0]["message"]["content"] = prompt
        elif self._reply is not None:
            data["choices"][0]["message"]["content"] = self._reply(prompt, self.chat_requests)
        return json.dumps(data).encode()

    async def _forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes]:
        root = self.upstream.removesuffix("/v1")
        keep = {k: v for k, v in headers.items() if k in ("authorization", "content-type")}
        response = await self._client.request(method, root + path, headers=keep, content=body)
        return response.status_code, response.content


async def _read_request(
    reader: asyncio.StreamReader,
) -> tuple[str, str, dict[str, str], bytes] | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", 0)))
    return method, path, headers, body


async def _respond(
    writer: asyncio.StreamWriter,
    status: int,
    body: bytes,
    extra: Mapping[str, str] | None = None,
    *,
    content_type: str = "application/json",
    cut: int | None = None,
) -> None:
    head = [
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        *(f"{k}: {v}" for k, v in (extra or {}).items()),
    ]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body[:cut])
    await writer.drain()


def _user_prompt(request: bytes) -> str:
    messages = json.loads(request).get("messages", [])
    return next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
