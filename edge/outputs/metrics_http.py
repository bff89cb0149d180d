"""The /metrics HTTP endpoint: one asyncio thread in front of prometheus_client's WSGI app, with bounded
connections and time, optional HTTP basic auth and TLS.

Why not prometheus_client's `start_http_server`: it serves every connection on a thread of its own
and waits for the request without a timeout, so a client that opens connections and sends nothing
(slowloris) held 391 connections, 379 threads and 225 MB, until real scrapes were refused and the
daemon's file descriptors (journal, camera, broker) were at risk. Here:
- one event-loop thread holds every connection, whatever their number, and one worker thread renders
  the metrics (the collector reads the daemon's status, which may wait on its locks);
- at most `Limits.max_connections` connections are open; a new one closes the oldest that has not
  yet sent its request, so a real scrape (which sends its request at once) still gets through while
  someone holds many idle connections;
- a client has `Limits.request_timeout_s` to complete the TLS handshake, then again to send its
  request head, and again to take the response; then it is dropped. One request per connection
  (`Connection: close`, as prometheus_client's server did).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import unquote

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    # Prometheus and agents scrape with one connection each; 32 leaves room for a few of them and a
    # person with curl, and keeps the endpoint's share of LimitNOFILE (systemd/crackd.service) small.
    max_connections: int = 32
    # A scrape sends its request as soon as it is connected (TLS: right after the handshake).
    request_timeout_s: float = 5.0
    # A request head is one line and a few headers; nothing legitimate comes near 8 KiB.
    max_request_bytes: int = 8192
    # Connections the kernel queues before the loop accepts them (prometheus_client's server: 5).
    backlog: int = 128


@dataclass(frozen=True)
class BasicAuth:
    """The one user name and password a scraper must send (HTTP basic auth)."""

    username: str
    password: str

    def allows(self, authorization: str | None) -> bool:
        """True when an Authorization header carries these credentials (compared in constant time)."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(token.strip(), validate=True).partition(b":")
        except (binascii.Error, ValueError):
            return False
        # Both comparisons always run, so the time taken does not tell which part was wrong.
        user_ok = hmac.compare_digest(user, self.username.encode())
        password_ok = hmac.compare_digest(password, self.password.encode())
        return bool(sep) and user_ok and password_ok


def resolve(host: str, port: int) -> tuple[socket.AddressFamily, tuple]:
    """The address `host` binds to: the first that getaddrinfo gives (as prometheus_client did). Raises OSError."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _type, _proto, _name, sockaddr = infos[0]
    return family, sockaddr


def tls_context(cert: str, key: str, client_ca: str | None = None) -> ssl.SSLContext:
    """A server context for https (TLS 1.2 or newer), requiring client certificates signed by `client_ca` when
    given. Raises OSError (ssl.SSLError included) for files that are unreadable or not what they should be."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    if client_ca:
        context.load_verify_locations(client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class MetricsServer:
    """Serves a WSGI app (prometheus_client.make_wsgi_app) on host:port from a thread of its own."""

    def __init__(
        self,
        app: Callable,
        host: str,
        port: int,
        *,
        auth: BasicAuth | None = None,
        tls: ssl.SSLContext | None = None,
        limits: Limits | None = None,
    ):
        self.app = app
        self.host, self.port = host, port
        self.auth, self.tls, self.limits = auth, tls, limits or Limits()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        # One renderer: scrapes come seconds apart, and a second thread would only help a flood.
        self._render = ThreadPoolExecutor(max_workers=1, thread_name_prefix="metrics-render")
        self._sock: socket.socket | None = None
        self._accepting: asyncio.Task | None = None
        self._open: set[asyncio.Task] = set()  # one task per connection, from accept to close
        self._waiting: dict[asyncio.Task, None] = {}  # those whose request is not read yet, oldest first

    def start(self) -> None:
        """Listen (raises OSError when the address cannot be bound) and serve until stop()."""
        family, sockaddr = resolve(self.host, self.port)
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(sockaddr)
            sock.listen(self.limits.backlog)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="metrics-http", daemon=True)
        self._thread.start()
        self._accepting = asyncio.run_coroutine_threadsafe(self._start_accepting(), self._loop).result()

    @property
    def bound_port(self) -> int:
        assert self._sock is not None
        return self._sock.getsockname()[1]

    def stop(self) -> None:
        """Close the listening socket and every connection, and end the thread."""
        if self._loop is None or self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._loop = self._thread = None
        self._render.shutdown()

    async def _start_accepting(self) -> asyncio.Task:
        return asyncio.create_task(self._accept_loop())

    async def _close(self) -> None:
        tasks = [t for t in (self._accepting, *self._open) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._sock is not None:
            self._sock.close()

    async def _accept_loop(self) -> None:
        """Accepts connections itself (not asyncio.start_server), so that each is counted, and can be closed to
        make room, from the moment it is accepted: a TLS client that never finishes its handshake included."""
        assert self._sock is not None
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _address = await loop.sock_accept(self._sock)
            except OSError as exc:  # EMFILE/ENFILE: the process is out of descriptors; let others close theirs
                log.warning("metrics: cannot accept a connection (%s); pausing 1 s", exc.strerror or exc)
                await asyncio.sleep(1)
                continue
            self._make_room()
            task = asyncio.create_task(self._connection(conn))
            self._open.add(task)
            self._waiting[task] = None
            task.add_done_callback(self._forget)
            # Let the connections closed to make room go before accepting more (a burst would not yield otherwise).
            await asyncio.sleep(0)

    def _forget(self, task: asyncio.Task) -> None:
        self._open.discard(task)
        self._waiting.pop(task, None)

    def _make_room(self) -> None:
        """At the limit, close the oldest connection still waiting for its request (a slowloris holds those)."""
        while len(self._open) >= self.limits.max_connections and self._waiting:
            oldest = next(iter(self._waiting))
            self._forget(oldest)
            oldest.cancel()  # its transport is closed as the task ends (the handshake's too, by asyncio)
        # Every slot busy sending responses: the newcomer is over the limit only until they finish.

    async def _connection(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        timeout = self.limits.request_timeout_s
        reader = asyncio.StreamReader(limit=self.limits.max_request_bytes)
        protocol = asyncio.StreamReaderProtocol(reader)
        try:
            transport, _ = await asyncio.wait_for(
                loop.connect_accepted_socket(
                    lambda: protocol, conn, ssl=self.tls, ssl_handshake_timeout=timeout if self.tls else None
                ),
                timeout,
            )
        except (OSError, asyncio.CancelledError):  # slow, failed or evicted handshake (asyncio closed it)
            conn.close()
            return
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        try:
            await self._serve(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # a client that was slow (TimeoutError), left, sent too much or spoke no TLS (SSLError): drop it
        except Exception:  # a bug here must cost one connection, never the endpoint
            log.exception("metrics: serving a connection failed")
        finally:
            transport.abort()  # closed already, unless the client was dropped or evicted

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        timeout = self.limits.request_timeout_s
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        task = asyncio.current_task()
        assert task is not None  # each connection is served by a task of its own
        self._waiting.pop(task, None)  # being served: no longer the first to be closed to make room
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            await self._respond(writer, "400 Bad Request", [], b"bad request line\n")
            return
        method, target, _version = parts
        headers = {}
        for line in header_lines:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if self.auth is not None and not self.auth.allows(headers.get("authorization")):
            challenge = [("WWW-Authenticate", 'Basic realm="crackd metrics", charset="UTF-8"')]
            await self._respond(writer, "401 Unauthorized", challenge, b"authentication required\n")
            return
        path, _, query = target.partition("?")
        environ = {
            "REQUEST_METHOD": method,
            "PATH_INFO": unquote(path),
            "QUERY_STRING": query,
            "HTTP_ACCEPT": headers.get("accept"),
            "HTTP_ACCEPT_ENCODING": headers.get("accept-encoding"),
        }
        status, response_headers, body = await asyncio.get_running_loop().run_in_executor(
            self._render, self._call_app, environ
        )
        await self._respond(writer, status, response_headers, body, send_body=method != "HEAD")

    def _call_app(self, environ: dict) -> tuple[str, list[tuple[str, str]], bytes]:
        started: list = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: object = None) -> None:
            started[:] = [status, headers]

        try:
            body = b"".join(self.app(environ, start_response))
        except Exception:  # a collector failing must not end the server; the scrape sees a 500
            log.exception("metrics: rendering the metrics failed")
            return "500 Internal Server Error", [], b"rendering the metrics failed (see the daemon's log)\n"
        return started[0], started[1], body

    async def _respond(
        self, writer: asyncio.StreamWriter, status: str, headers: list, body: bytes, send_body: bool = True
    ) -> None:
        lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers)]
        lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
        writer.write("\r\n".join(lines).encode("latin-1") + (body if send_body else b""))  # HEAD: headers only
        writer.close()  # after the buffered response is sent (TLS: and the close_notify)
        await asyncio.wait_for(writer.wait_closed(), self.limits.request_timeout_s)
