"""The deployment webhook against a real HTTP server on 127.0.0.1."""

import json
import logging
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from foundry_assets.publisher import DeliveryError, PublishResult, deployment_payload, notify_deployment


class Receiver(BaseHTTPRequestHandler):
    """Answers each POST with the next status of `script` (then 200), recording every request; a 3xx points to
    `location`."""

    script: ClassVar[list[int]] = []
    received: ClassVar[list[dict[str, Any]]] = []
    location: ClassVar[str] = ""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).received.append(
            {"path": self.path, "headers": dict(self.headers), "json": json.loads(body) if body else None}
        )
        status = type(self).script.pop(0) if type(self).script else 200
        self.send_response(status)
        if 300 <= status < 400:
            self.send_header("Location", type(self).location)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    do_GET = do_POST  # a client that followed a 302/303 would come back with a GET and no body

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet."""


class Elsewhere(Receiver):
    """A second server, on another port (another origin): records whatever reaches it."""

    script: ClassVar[list[int]] = []
    received: ClassVar[list[dict[str, Any]]] = []


def _serve(handler: type[Receiver]) -> Iterator[str]:
    handler.script, handler.received, handler.location = [], [], ""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture()
def receiver() -> Iterator[str]:
    """A live HTTP server on 127.0.0.1; yields its base URL."""
    yield from _serve(Receiver)


@pytest.fixture()
def elsewhere() -> Iterator[str]:
    """Another live HTTP server on 127.0.0.1 (another port, so another origin); yields its base URL."""
    yield from _serve(Elsewhere)


def _payload() -> dict[str, Any]:
    result = PublishResult(
        "s3://models/prod/v1/", "v1", "published", {"a.safetensors": "ab" * 32}, "cd" * 32, True
    )
    return deployment_payload(result, lot_number="ef" * 32, artifact="adapter")


def test_payload_carries_uri_tag_lot_and_hashes() -> None:
    payload = _payload()
    assert payload["uri"] == "s3://models/prod/v1/" and payload["tag"] == "v1"
    assert payload["lot_number"] == "ef" * 32 and payload["files"] == {"a.safetensors": "ab" * 32}
    assert payload["artifact_sha256"] == "cd" * 32 and payload["artifact"] == "adapter"


def test_retries_with_backoff_until_delivered(receiver: str) -> None:
    Receiver.script = [503, 500]
    result = notify_deployment(f"{receiver}/hooks/models", _payload(), retries=3, backoff_s=0.01)
    assert (result.status_code, result.attempts) == (200, 3)
    assert [r["json"] for r in Receiver.received] == [_payload()] * 3
    keys = {r["headers"]["Idempotency-Key"] for r in Receiver.received}
    assert keys == {result.idempotency_key}, "every retry carries the same idempotency key"
    assert Receiver.received[0]["headers"]["Content-Type"] == "application/json"


def test_always_failing_receiver_raises_after_the_last_attempt(receiver: str) -> None:
    Receiver.script = [500] * 10
    with pytest.raises(DeliveryError, match="failed after 3 attempts; last: HTTP 500") as info:
        notify_deployment(receiver, _payload(), retries=2, backoff_s=0.0)
    assert (info.value.attempts, info.value.status_code) == (3, 500)
    assert len(Receiver.received) == 3


def test_client_error_is_not_retried(receiver: str) -> None:
    Receiver.script = [400]
    with pytest.raises(DeliveryError, match="refused the notice: HTTP 400") as info:
        notify_deployment(receiver, _payload(), retries=3, backoff_s=0.0)
    assert info.value.attempts == 1 and len(Receiver.received) == 1


def test_connection_refused_is_retried_then_reported() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(DeliveryError, match="failed after 2 attempts; last: no answer") as info:
        notify_deployment(f"http://127.0.0.1:{port}/x", {"a": 1}, retries=1, backoff_s=0.0, timeout_s=1)
    assert info.value.attempts == 2 and info.value.status_code is None


def test_the_token_header_is_not_logged(receiver: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    Receiver.script = [502]
    url = f"{receiver}/hook?env=prod"
    result = notify_deployment(url, {"a": 1}, backoff_s=0.0, headers={"Authorization": "Bearer hdr-SECRET"})
    assert Receiver.received[-1]["headers"]["Authorization"] == "Bearer hdr-SECRET"
    assert "SECRET" not in caplog.text and "SECRET" not in str(result.to_metadata())
    assert result.url == url, "a query without credentials is kept"


@pytest.mark.parametrize(
    "url",
    [
        "https://bot:pw-SECRET@deploy.example/x",
        "https://tok-SECRET@deploy.example/x",
        "https://deploy.example/x?token=tok-SECRET",
        "https://deploy.example/x?a=1&X-Amz-Signature=sig-SECRET",
        "https://deploy.example/x?access_token=tok-SECRET",
    ],
)
def test_a_url_holding_a_credential_is_refused_without_echoing_it(url: str) -> None:
    with pytest.raises(ValueError, match="webhook URL holds a credential") as info:
        notify_deployment(url, {})
    assert "SECRET" not in str(info.value) and "FOUNDRY_WEBHOOK_TOKEN" in str(info.value)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_a_failure_and_the_token_never_reaches_another_origin(
    receiver: str, elsewhere: str, status: int
) -> None:
    Receiver.script, Receiver.location = [status], f"{elsewhere}/collect?sig=loc-SECRET"
    with pytest.raises(DeliveryError, match=f"answered HTTP {status}.*redirecting to") as info:
        notify_deployment(f"{receiver}/hook", _payload(), headers={"Authorization": "Bearer hdr-SECRET"})
    port = elsewhere.rsplit(":", 1)[1]
    assert f"http://127.0.0.1:{port}" in str(info.value) and "SECRET" not in str(info.value)
    assert info.value.status_code == status and len(Receiver.received) == 1, "a redirect is not retried"
    assert Elsewhere.received == [], "nothing (no token, no notice) went to the other origin"


def test_a_same_origin_redirect_is_not_delivered_either(receiver: str) -> None:
    Receiver.script, Receiver.location = [302], "/moved"
    with pytest.raises(DeliveryError, match="HTTP 302") as info:
        notify_deployment(f"{receiver}/hook", _payload())
    assert info.value.status_code == 302
    assert [r["path"] for r in Receiver.received] == ["/hook"], (
        "no GET without the notice counted as delivered"
    )


def test_a_redirect_to_an_unreadable_address_is_a_delivery_error(receiver: str) -> None:
    Receiver.script, Receiver.location = [302], "http://host:port-is-not-a-number/x"
    with pytest.raises(DeliveryError, match="redirecting to an unreadable address"):
        notify_deployment(f"{receiver}/hook", _payload())


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="not an http"):
        notify_deployment("file:///etc/passwd", {})
    with pytest.raises(ValueError, match="retries"):
        notify_deployment("http://127.0.0.1:9/x", {}, retries=-1)
