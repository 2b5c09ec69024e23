"""Credentials in URLs: which parts are found (validation refuses them), and how text holding URLs is redacted."""

import pytest

from foundry_assets.redact import credential_parts, redact


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("git+https://ghp_tok@host/org/r.git", "git+https://***@host/org/r.git"),
        ("s3://AKIA:secret@bucket/prefix", "s3://***@bucket/prefix"),
        ("ssh://git:pw@host/r.git", "ssh://***@host/r.git"),
        ("git+ssh://git@github.com/org/r.git#main", "git+ssh://git@github.com/org/r.git#main"),
        (
            "https://h/x?token=t1&env=prod&X-Amz-Signature=t2;sig=t3&X-Amz-Security-Token=t4",
            "https://h/x?token=***&env=prod&X-Amz-Signature=***;sig=***&X-Amz-Security-Token=***",
        ),
        (
            "fatal: unable to access 'https://x-access-token:ghp_t@github.com/o/r.git/': 403",
            "fatal: unable to access 'https://***@github.com/o/r.git/': 403",
        ),
        ("/plain/path/with@sign", "/plain/path/with@sign"),
        ("s3://bucket/key@v2?versionId=3", "s3://bucket/key@v2?versionId=3"),
    ],
)
def test_redact_masks_user_info_and_token_values_only(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_credential_parts_name_the_carrier_never_the_value() -> None:
    assert credential_parts("git+ssh://git@host/r.git") == [], "an ssh login is not a secret"
    assert credential_parts("https://host/x?env=prod") == []
    found = credential_parts("https://tok-VALUE@host/x?access_token=VALUE&page=2")
    assert found == [
        "a user name (TOKEN@host), where tokens are passed",
        "the query parameter 'access_token'",
    ]
    assert credential_parts("s3://key:VALUE@bucket") == ["a password in the user info (user:password@)"]
