"""Deployment trigger: POST a JSON notice of a verified publish to a webhook, with retries and exponential backoff.

Only the standard library (urllib). A connection error, a timeout, HTTP 429 or a 5xx is retried; any other 4xx is
the receiver refusing the notice and fails at once. The notice carries an `Idempotency-Key` header (the SHA256 of
the body), so a receiver can drop the duplicate of a retried delivery. A failed notice never un-publishes: the
caller reports it as a failed step. URLs are logged without user info, query or fragment (where tokens hide).
"""

import hashlib
import http.client
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlparse, urlunparse

from foundry_assets.errors import PublishError
from foundry_assets.publisher.base import PublishResult

log = logging.getLogger(__name__)
USER_AGENT = "coreason-model-foundry"


class DeliveryError(PublishError):
    """The deployment notice could not be delivered (after every retry, or refused with a 4xx)."""

    def __init__(self, message: str, *, attempts: int, status_code: int | None) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.status_code = status_code


@dataclass(frozen=True)
class DeliveryResult:
    """A delivered notice: where (redacted), the receiver's HTTP status, and how many attempts it took."""

    url: str
    status_code: int
    attempts: int
    idempotency_key: str

    def to_metadata(self) -> dict[str, object]:
        """A JSON-able dict for asset metadata and the audit trail."""
        return asdict(self)


def redact_url(url: str) -> str:
    """The URL without user info, query or fragment, safe for logs and metadata."""
    parsed = urlparse(url)
    host = parsed.hostname or ""
    netloc = f"{host}:{parsed.port}" if parsed.port else host
    return urlunparse((parsed.scheme, netloc, parsed.path, "", "", ""))


def check_webhook_url(url: str) -> str:
    """Return `url` if it is an http(s) URL with a host and no user info; raise ValueError otherwise."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"webhook URL {redact_url(url)!r} is not an http:// or https:// URL with a host")
    if parsed.username or parsed.password:
        raise ValueError(
            f"webhook URL {redact_url(url)!r} holds user info; send credentials as `headers` instead"
        )
    return url


def deployment_payload(result: PublishResult, *, lot_number: str, **extra: Any) -> dict[str, Any]:
    """The notice for a verified publish: artifact URI, tag, lot number and every file's SHA256 (plus `extra`)."""
    return {
        "event": "artifact.published",
        "uri": result.uri,
        "tag": result.tag,
        "status": result.status,
        "lot_number": lot_number,
        "artifact_sha256": result.artifact_sha256,
        "files": dict(sorted(result.files.items())),
        **extra,
    }


def _retriable(error: Exception) -> tuple[bool, int | None, str]:
    """Whether a failed attempt is worth retrying, its HTTP status if any, and a short description."""
    if isinstance(error, urllib.error.HTTPError):
        return error.code >= 500 or error.code == 429, error.code, f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return True, None, f"connection failed: {error.reason}"
    return True, None, f"{type(error).__name__}: {error}"


def notify_deployment(
    url: str,
    payload: Mapping[str, Any],
    *,
    retries: int = 3,
    backoff_s: float = 0.5,
    timeout_s: float = 5.0,
    headers: Mapping[str, str] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> DeliveryResult:
    """POST `payload` as JSON to `url`: up to `1 + retries` attempts, waiting `backoff_s * 2**n` between them.

    `headers` (e.g. an Authorization token) are sent but never logged. Raises `DeliveryError` after the last
    attempt, or at once when the receiver answers with a 4xx other than 429.
    """
    check_webhook_url(url)
    if retries < 0 or backoff_s < 0 or timeout_s <= 0:
        raise ValueError(f"retries ({retries}) and backoff_s ({backoff_s}) must be >= 0 and timeout_s > 0")
    body = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode("utf-8")
    key = hashlib.sha256(body).hexdigest()
    send_headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Idempotency-Key": key,
        **(headers or {}),
    }
    where, attempts = redact_url(url), retries + 1
    for attempt in range(1, attempts + 1):
        request = urllib.request.Request(url, data=body, headers=send_headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                response.read()
                log.info(
                    "Deployment notice delivered to %s (HTTP %d, attempt %d)", where, response.status, attempt
                )
                return DeliveryResult(where, response.status, attempt, key)
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
            delay = _after_failure(e, where, attempt, attempts, backoff_s)
            sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def _after_failure(error: Exception, where: str, attempt: int, attempts: int, backoff_s: float) -> float:
    """How long to wait before the next attempt; raises `DeliveryError` when the failure is final (a refusal, or
    the last attempt)."""
    retry, status, reason = _retriable(error)
    if not retry:
        raise DeliveryError(
            f"deployment webhook {where} refused the notice: {reason}; not retried (fix the receiver "
            "or the payload, then re-run the notice).",
            attempts=attempt,
            status_code=status,
        ) from None
    if attempt == attempts:
        raise DeliveryError(
            f"deployment webhook {where} failed after {attempts} attempts; last: {reason}. The artifact "
            "stays published; re-run the notice once the receiver is up.",
            attempts=attempt,
            status_code=status,
        ) from None
    delay = backoff_s * 2 ** (attempt - 1)
    log.warning(
        "Deployment notice to %s failed (%s); retry %d/%d in %.2f s",
        where,
        reason,
        attempt,
        attempts - 1,
        delay,
    )
    return delay
