"""Who an audit record is from: the actor's form, where the process and a Dagster run take it from."""

import getpass

import pytest

from foundry_assets.actor import (
    ACTOR_ENV,
    ACTOR_TAG,
    NOT_RECORDED,
    SENSOR_TAG,
    Actor,
    actor_from_env,
    current_actor,
    describe,
    parse_actor,
    run_actor,
    use_actor,
)


def test_an_actor_is_a_kind_and_a_name_and_serialises_to_a_plain_dict() -> None:
    assert Actor("user", "alice").to_dict() == {"kind": "user", "name": "alice"}
    assert Actor("sensor", "drop_sensor", "r1").to_dict() == {
        "kind": "sensor",
        "name": "drop_sensor",
        "run_id": "r1",
    }
    with pytest.raises(ValueError, match="actor kind 'admin' is not one of user, service, sensor"):
        Actor("admin", "root")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="a user actor needs a name"):
        Actor("user", " ")
    with pytest.raises(AttributeError):
        Actor("user", "alice").name = "mallory"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("service:ci-nightly", Actor("service", "ci-nightly")),
        ("user:Alice Smith", Actor("user", "Alice Smith")),
        ("alice@example.com", Actor("user", "alice@example.com")),
        ("robot:x", Actor("user", "robot:x")),  # not a kind: the whole text is a user name
    ],
)
def test_actor_text_is_kind_colon_name_or_a_user_name(text: str, expected: Actor) -> None:
    assert parse_actor(text) == expected
    assert parse_actor(expected.to_tag()) == expected


def test_actor_text_without_a_name_is_refused_naming_its_source() -> None:
    with pytest.raises(ValueError, match="FOUNDRY_ACTOR='service:' names no actor"):
        parse_actor("service:")


def test_the_process_acts_as_foundry_actor_else_the_os_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ACTOR_ENV, raising=False)
    assert actor_from_env() == Actor("user", getpass.getuser())
    monkeypatch.setenv(ACTOR_ENV, "service:ci")
    assert current_actor() == Actor("service", "ci")
    with use_actor(Actor("user", "qa")) as actor:
        assert current_actor() is actor
    assert current_actor() == Actor("service", "ci")


def test_the_actor_follows_the_environment_after_datasets_replaced_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`Dataset.map(num_proc=...)`, which the trainers run, leaves a copy in `os.environ`'s place: a later
    FOUNDRY_ACTOR is set in the copy, and the actor must be read from there."""
    import os

    from datasets import Dataset

    monkeypatch.setattr(os, "environ", os.environ)  # the original object comes back after the test
    before = os.environ
    Dataset.from_list([{"n": 1}]).map(lambda row: row, num_proc=1)
    assert os.environ is not before
    monkeypatch.setenv(ACTOR_ENV, "service:nightly")
    assert current_actor() == Actor("service", "nightly")


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ({ACTOR_TAG: "user:alice"}, Actor("user", "alice", "r1")),
        ({SENSOR_TAG: "drop_sensor"}, Actor("sensor", "drop_sensor", "r1")),
        ({"user": "bob@example.com"}, Actor("user", "bob@example.com", "r1")),  # Dagster+ names the launcher
        ({}, Actor("service", "dagster", "r1")),  # the OSS UI does not know who clicked
        # re-executed by hand: the parent's tags are copied, its person is not who clicked now
        ({ACTOR_TAG: "user:alice", "dagster/parent_run_id": "r0"}, Actor("service", "dagster", "r1")),
        # the daemon's automatic retry acts for the parent's launcher
        (
            {ACTOR_TAG: "user:alice", "dagster/parent_run_id": "r0", "dagster/retry_number": "1"},
            Actor("user", "alice", "r1"),
        ),
    ],
)
def test_a_run_acts_for_its_tag_its_sensor_or_dagster(tags: dict[str, str], expected: Actor) -> None:
    assert run_actor("r1", tags) == expected


def test_describe_shows_who_or_not_recorded() -> None:
    assert describe(Actor("user", "alice", "0123456789abcdef").to_dict()) == "user alice · run 01234567"
    assert describe(None) == NOT_RECORDED
