"""Who an audit record is from: the person, service or sensor that caused it, and the Dagster run it was written in.

An auditor needs *who* beside *what* and *when* (21 CFR 11.10(e), EU Annex 11 §9). Each entry point says who acts:
the `foundry` CLI (the OS user, or `FOUNDRY_ACTOR`) with `use_actor`, and puts it on the runs it launches as the
`foundry/actor` tag; inside a run the actor is read from the run's tags (`run_actor`). OSS Dagster does not know who
clicked in its UI, so a run launched there is recorded as the service `dagster` with its run id. A tag or the
environment is a claim, not a proof of identity: a signature (`foundry sign`) is what binds a person to a decision.
"""

import contextlib
import getpass
import os
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any, Literal, cast, get_args

ActorKind = Literal["user", "service", "sensor"]
KINDS: tuple[str, ...] = get_args(ActorKind)
ACTOR_ENV = "FOUNDRY_ACTOR"
"""Who this process acts for, as `KIND:NAME` (e.g. `service:ci-nightly`) or a bare user name; default: the OS user."""
ACTOR_TAG = "foundry/actor"
"""The run tag that carries the launching actor (`KIND:NAME`) into the run's records."""
SENSOR_TAG = "dagster/sensor_name"
"""Set by Dagster on every run a sensor requests."""
USER_TAG = "user"
"""Set by Dagster+ (not OSS) to the email of the person who launched the run."""
PARENT_RUN_TAG, RETRY_NUMBER_TAG = "dagster/parent_run_id", "dagster/retry_number"
"""A re-execution names its parent; only the daemon's automatic retry also carries a retry number."""
NOT_RECORDED = "(not recorded)"
"""How a record written before actors were recorded shows its actor."""


@dataclass(frozen=True)
class Actor:
    """A person (`user`: login or printed name), a `service` or a `sensor` (its Dagster name), and the run it acts in."""

    kind: ActorKind
    name: str
    run_id: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"actor kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if not self.name.strip():
            raise ValueError(f"a {self.kind} actor needs a name (got {self.name!r})")

    def to_dict(self) -> dict[str, str]:
        """The record's `actor` object: kind, name and (inside a Dagster run) run_id."""
        value = {"kind": self.kind, "name": self.name}
        return {**value, "run_id": self.run_id} if self.run_id else value

    def to_tag(self) -> str:
        """`KIND:NAME`, as `FOUNDRY_ACTOR` and the `foundry/actor` run tag hold it (`parse_actor` reads it back)."""
        return f"{self.kind}:{self.name}"

    def in_run(self, run_id: str) -> "Actor":
        return replace(self, run_id=run_id)


def parse_actor(text: str, *, source: str = ACTOR_ENV) -> Actor:
    """`KIND:NAME` (KIND one of user, service, sensor) or a bare user name; ValueError naming `source` when empty."""
    kind, sep, name = text.strip().partition(":")
    if sep and kind in KINDS:
        value = Actor(cast(ActorKind, kind), name.strip()) if name.strip() else None
    else:
        value = Actor("user", text.strip()) if text.strip() else None
    if value is None:
        raise ValueError(
            f"{source}={text!r} names no actor; set it to KIND:NAME (e.g. service:ci) or a user name"
        )
    return value


def actor_from_env() -> Actor:
    """`FOUNDRY_ACTOR` when set, else the OS user (the login name `getpass` finds, else the numeric uid).

    Reads `os.environ` when called: `datasets.Dataset.map(num_proc=...)` (which Unsloth's trainers run) replaces the
    `os.environ` object with a copy, so a reference taken at import would miss every later change."""
    if value := os.environ.get(ACTOR_ENV):
        return parse_actor(value)
    try:
        return Actor("user", getpass.getuser())
    except (KeyError, OSError):  # a container user with no passwd entry and no LOGNAME/USER
        return Actor("user", f"uid {os.getuid()}")


_current: ContextVar[Actor | None] = ContextVar("foundry_actor", default=None)


@contextlib.contextmanager
def use_actor(actor: Actor) -> Iterator[Actor]:
    """Records appended inside the block without an explicit actor are this actor's (entry points set it)."""
    token = _current.set(actor)
    try:
        yield actor
    finally:
        _current.reset(token)


def current_actor() -> Actor:
    """The actor set by `use_actor`, else the environment's (`actor_from_env`)."""
    return _current.get() or actor_from_env()


def run_actor(run_id: str, tags: Mapping[str, str]) -> Actor:
    """Who a Dagster run acts for, from its tags: `foundry/actor` (set by `foundry run`), the Dagster+ `user`, the
    requesting sensor, else the service `dagster` (a launch from the OSS UI, which does not know who clicked). A run
    re-executed by hand is the service `dagster` too: it copies its parent's tags, but not its parent's person. The
    daemon's automatic retry keeps its parent's actor. Always with the run's id."""
    if tags.get(PARENT_RUN_TAG) and not tags.get(RETRY_NUMBER_TAG):
        return Actor("service", "dagster", run_id)
    if claimed := tags.get(ACTOR_TAG, "").strip():
        return parse_actor(claimed, source=f"run tag {ACTOR_TAG}").in_run(run_id)
    if user := tags.get(USER_TAG, "").strip():
        return Actor("user", user, run_id)
    if sensor := tags.get(SENSOR_TAG, "").strip():
        return Actor("sensor", sensor, run_id)
    return Actor("service", "dagster", run_id)


def describe(actor: Any) -> str:
    """A record's `actor` object as one line for people (`user alice · run 1a2b3c4d`); NOT_RECORDED when absent."""
    if not isinstance(actor, Mapping) or not actor.get("name"):
        return NOT_RECORDED
    run = f" · run {str(actor['run_id'])[:8]}" if actor.get("run_id") else ""
    return f"{actor.get('kind', '?')} {actor['name']}{run}"
