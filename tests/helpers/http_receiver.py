"""A real local HTTP(S) server that records POSTs, for the webhook tests, with failures to inject.

`Receiver.plan` holds what the next requests get, one entry each, then 200s: an HTTP status
(500, 302, ...) or "hang" (no answer for `hang_s`: the client's timeout). stop() and start()
again on the same port make an outage (connection refused meanwhile).
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.helpers.ports import free_port


class Receiver:
    def __init__(self, tls=None, hang_s: float = 3.0):
        self.port = free_port()
        self.tls = tls  # tests.helpers.mqtt.make_test_ca(): serve https with its server certificate
        self.hang_s = hang_s
        self.plan: list[int | str] = []
        self.received: list[tuple[dict, dict]] = []  # (headers, body) of the POSTs answered 200
        self.requests = 0
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    receiver.requests += 1
                    step = receiver.plan.pop(0) if receiver.plan else 200
                if step == "hang":
                    time.sleep(receiver.hang_s)
                    return
                if step == 200:
                    with receiver.lock:
                        receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(int(step))
                if int(step) in (301, 302, 307, 308):
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        if self.tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self.tls.server_cert, self.tls.server_key)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def bodies(self) -> list[dict]:
        with self.lock:
            return [json.loads(body) for _, body in self.received]
