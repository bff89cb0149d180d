"""The `webhook` output: each event message as an HTTP POST, from its own outbox rows (docs/webhook.md).

The body (docs/schemas/http/webhook.schema.json) wraps the same `event` object the MQTT `event`
topic carries, and with `webhook.include_snapshot` the overlay JPEG (base64) of messages that
took a new picture. The outbox row keeps the picture's path, not its bytes; the file is read
when the POST is made (null if retention removed it meanwhile).

Delivery: one POST at a time, in outbox order, from thread `webhook`. A 2xx answer deletes the
row; anything else (an error status, a redirect, a timeout, a refused connection, a certificate
that does not verify) leaves it and retries after a back-off from `retry_min_s` doubling up to
`retry_max_s`, so an unreachable receiver loses nothing and holds back no other output. A
receiver may see a message twice (its answer lost): `X-Crackd-Delivery` (the outbox id, also the
event's `seq`) identifies it. `X-Crackd-Signature: sha256=<hex>` is the HMAC-SHA256 of the exact
body bytes under the configured secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import ssl
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from edge import __version__
from edge.config import Config
from edge.daemon_status import OutputStatus
from edge.events.journal import Journal, OutboxMessage, OutboxRow
from edge.outputs.base import EventOut, EventOutput, OutputContext, register
from edge.outputs.payloads import PAYLOAD_SCHEMA_VERSION, event_payload

log = logging.getLogger(__name__)

NAME = "webhook"
SIGNATURE_HEADER = "X-Crackd-Signature"
DELIVERY_HEADER = "X-Crackd-Delivery"
EVENT_HEADER = "X-Crackd-Event"
ERROR_LOG_INTERVAL_S = 60.0  # a receiver that stays down is reported at most this often


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is a failure (urllib would turn the POST into a GET without its body)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def tls_context(cfg: Config) -> ssl.SSLContext:
    w = cfg.webhook
    context = ssl.create_default_context(cafile=w.ca)
    if not w.verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Webhook(EventOutput):
    name = NAME

    def __init__(self, cfg: Config, journal: Journal, secret: str | None):
        self.cfg = cfg
        self.journal = journal
        self._secret = secret
        self._opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=tls_context(cfg)), _NoRedirect())
        self.delivered = 0
        self.failures = 0  # failed POSTs (each retried)
        self.last_error: str | None = None
        self._streak_since = time.time()  # rows created before this start or the last failed POST are replays
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error_logged = 0.0
        if not cfg.webhook.verify_tls:
            log.warning("webhook: verify_tls is false: the receiver's certificate is not checked (test rigs only)")

    # ------------------------------------------------------------------ what goes in the outbox

    def messages(self, event: EventOut) -> list[OutboxMessage]:
        picture = None
        if self.cfg.webhook.include_snapshot and event.new_pictures and event.pictures is not None:
            picture = event.pictures.overlay
        stored = {"event": event_payload(event), "picture": picture}
        return [OutboxMessage("event", stored, 1, False, event.record.uuid, output=NAME)]

    def body(self, row: OutboxRow, replayed: bool) -> bytes:
        """The POST body of an outbox row (docs/schemas/http/webhook.schema.json)."""
        stored = json.loads(row.payload)
        event = stored["event"]
        event["seq"] = row.id
        event["replayed"] = replayed
        snapshot = None
        if stored.get("picture"):
            try:
                snapshot = base64.b64encode((self.cfg.state_dir / stored["picture"]).read_bytes()).decode()
            except OSError:
                pass  # removed by retention or the snapshot budget meanwhile: the event still goes
        payload = {
            "schema_version": PAYLOAD_SCHEMA_VERSION,
            "device_id": event["device_id"],
            "event": event,
            "snapshot_jpeg": snapshot,
        }
        return json.dumps(payload, separators=(",", ":")).encode()

    # ------------------------------------------------------------------ delivery

    def start(self) -> None:
        self._thread = threading.Thread(target=self._deliver_loop, name="webhook", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        self._wake.set()

    def stop(self, timeout: float) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def status(self) -> OutputStatus:
        return OutputStatus(self.name, self.waiting(self.journal), self.delivered, self.last_error)

    def flush(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.journal.outbox_depth(NAME):
            if time.monotonic() >= deadline or self._thread is None or not self._thread.is_alive():
                return False
            self._wake.set()
            time.sleep(0.05)
        return True

    def _deliver_loop(self) -> None:
        w = self.cfg.webhook
        backoff = 0.0
        while not self._stop.is_set():
            try:
                rows = self.journal.outbox_fetch(after_id=0, limit=1, output=NAME)
            except Exception as exc:  # the journal unreadable for a moment (disk trouble): try again
                self._report(f"cannot read the outbox: {exc}")
                self._stop.wait(1.0)
                continue
            if not rows:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            row = rows[0]
            error = self._post(row, replayed=row.created_at < self._streak_since)
            if error is None:
                try:
                    self.journal.outbox_ack([row.id])
                except Exception as exc:  # delivered; sent again later (same X-Crackd-Delivery), harmless
                    self._report(f"cannot delete delivered row {row.id}: {exc}")
                    self._stop.wait(1.0)
                    continue
                self.delivered += 1
                if backoff:
                    log.info("webhook: %s answers again; delivering the waiting messages", w.url)
                backoff = 0.0
                self.last_error = None
                continue
            self.failures += 1
            self._streak_since = time.time()  # what was created before a failed POST is sent late: replayed
            backoff = min(max(w.retry_min_s, 2 * backoff), w.retry_max_s)
            self._report(f"POST {w.url} failed ({error}); retrying in {backoff:g} s, messages wait in the outbox")
            self._stop.wait(backoff)

    def _post(self, row: OutboxRow, replayed: bool) -> str | None:
        """POST one row; None when the receiver answered 2xx, else why not."""
        w = self.cfg.webhook
        assert w.url is not None  # the config refuses an enabled webhook without one
        body = self.body(row, replayed)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"crackd/{__version__}",
            DELIVERY_HEADER: str(row.id),
            EVENT_HEADER: str(json.loads(body)["event"]["type"]),
        }
        if self._secret is not None:
            headers[SIGNATURE_HEADER] = sign(self._secret, body)
        request = urllib.request.Request(w.url, data=body, headers=headers, method="POST")
        try:
            with self._opener.open(request, timeout=w.timeout_s) as answer:
                answer.read()
                return None if 200 <= answer.status < 300 else f"HTTP {answer.status}"
        except urllib.error.HTTPError as exc:
            return f"HTTP {exc.code} {exc.reason}"
        except urllib.error.URLError as exc:
            return str(exc.reason)
        except (OSError, ValueError) as exc:  # timeouts, resets, a malformed answer
            return f"{type(exc).__name__}: {exc}"

    def _report(self, message: str) -> None:
        self.last_error = message
        now = time.monotonic()
        if now - self._error_logged >= ERROR_LOG_INTERVAL_S:
            self._error_logged = now
            log.warning("webhook: %s", message)


@register(NAME)
def _factory(context: OutputContext) -> Webhook | None:
    cfg = context.cfg
    if not cfg.webhook.enabled:
        return None
    return Webhook(cfg, context.journal, cfg.webhook_secret())  # ConfigError: the secret's env/file is missing
