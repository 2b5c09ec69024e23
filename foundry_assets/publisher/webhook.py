"""Deployment trigger: POST a JSON notice of a verified publish to a webhook, with retries and exponential backoff.

Sent with urllib3, whose `Retry` does the retrying: a connection error, a timeout, HTTP 429 or a 5xx is retried; any
other 4xx is the receiver refusing the notice and fails at once. Redirects are never followed: the operator's bearer
token must not reach another address, and a 301/302/303 would turn the POST into a GET without the notice, so a 3xx
is a failure naming where it pointed. Only a 2xx answer counts as delivered. The notice carries an `Idempotency-Key`
header (the SHA256 of the body), so a receiver can drop the duplicate of a retried delivery. A failed notice never
un-publishes: the caller reports it as a failed step. A URL holding a credential is refused (the token goes in a
header); URLs are logged and raised redacted.
"""

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import urllib3
from urllib3.exceptions import HTTPError, MaxRetryError
from urllib3.util.retry import Retry

from foundry_assets.errors import PublishError
from foundry_assets.publisher.base import PublishResult
from foundry_assets.redact import WEBHOOK_CREDENTIALS_FIX, credential_problem, redact

log = logging.getLogger(__name__)
USER_AGENT = "coreason-model-foundry"
RETRIED_STATUSES = frozenset({429, *range(500, 600)})
"""Answers worth another attempt: the receiver is busy or broken, not refusing this notice."""


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


def check_webhook_url(url: str) -> str:
    """Return `url` if it is an http(s) URL with a host and no credential; raise ValueError otherwise."""
    problem = credential_problem("webhook URL", url, WEBHOOK_CREDENTIALS_FIX)
    if problem:
        raise ValueError(problem)
    parsed = urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"webhook URL {redact(url)!r} is not an http:// or https:// URL with a host")
    return url


def _origin(url: str) -> str:
    """scheme://host:port of `url`, the unit a token may be sent to (a receiver's Location may be anything)."""
    try:
        parts = urlsplit(url)
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme, 0)
    except ValueError:
        return "an unreadable address"
    return (
        redact(f"{parts.scheme}://{parts.hostname}:{port}") if parts.hostname else "an address without a host"
    )


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


def notify_deployment(
    url: str,
    payload: Mapping[str, Any],
    *,
    retries: int = 3,
    backoff_s: float = 0.5,
    timeout_s: float = 5.0,
    headers: Mapping[str, str] | None = None,
) -> DeliveryResult:
    """POST `payload` as JSON to `url`: up to `1 + retries` attempts, backing off `backoff_s * 2**n` between them
    (urllib3's `Retry`: the first retry at once).

    `headers` (e.g. an Authorization token) are sent to `url`'s origin only and never logged. Raises
    `DeliveryError` after the last attempt, at once when the receiver answers with a 4xx other than 429, and on
    any redirect.
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
    retry = Retry(
        total=retries,
        redirect=False,  # never followed: see the module's docstring
        status_forcelist=RETRIED_STATUSES,
        allowed_methods=None,  # the POST is retried too: the Idempotency-Key makes a duplicate harmless
        backoff_factor=backoff_s,
        raise_on_status=False,  # the last answer is returned, and reported below
        respect_retry_after_header=False,  # a receiver's Retry-After must not hold the publish step for as long as it likes
    )
    where, pool = redact(url), urllib3.PoolManager(timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s))
    try:
        response = pool.request("POST", url, body=body, headers=send_headers, retries=retry, redirect=False)
    except MaxRetryError as e:
        raise DeliveryError(
            f"deployment webhook {where} failed after {retries + 1} attempts; last: no answer "
            f"({redact(str(e.reason))[:300]}). The artifact stays published; re-run the notice once the receiver is up.",
            attempts=retries + 1,
            status_code=None,
        ) from None
    except HTTPError as e:
        raise DeliveryError(
            f"deployment webhook {where}: {redact(str(e))[:300]}", attempts=1, status_code=None
        ) from None
    finally:
        pool.clear()
    attempts = len(response.retries.history) + 1 if response.retries else 1
    _check_answer(response, url, where, attempts)
    log.info("Deployment notice delivered to %s (HTTP %d, attempt %d)", where, response.status, attempts)
    return DeliveryResult(where, response.status, attempts, key)


def _check_answer(response: urllib3.BaseHTTPResponse, url: str, where: str, attempts: int) -> None:
    """Raise `DeliveryError` unless the final answer is a 2xx: a redirect, a refusal, or the last failed retry."""
    status, reason = response.status, f"HTTP {response.status} {response.reason or ''}".rstrip()
    if 200 <= status < 300:
        return
    if 300 <= status < 400:
        location = response.headers.get("Location", "")
        target = _origin(urljoin(url, location)) if location else "no Location"
        raise DeliveryError(
            f"deployment webhook {where} answered {reason}, redirecting to {target}; redirects are not followed "
            "(the notice and its token go to the configured address only), so nothing was delivered. Set "
            "publish_target.webhook_url to the final address.",
            attempts=attempts,
            status_code=status,
        )
    if status in RETRIED_STATUSES:
        raise DeliveryError(
            f"deployment webhook {where} failed after {attempts} attempts; last: {reason}. The artifact stays "
            "published; re-run the notice once the receiver is up.",
            attempts=attempts,
            status_code=status,
        )
    raise DeliveryError(
        f"deployment webhook {where} refused the notice: {reason}; not retried (fix the receiver or the payload, "
        "then re-run the notice).",
        attempts=attempts,
        status_code=status,
    )
