"""Credentials in URLs: found, so that validation refuses them, and masked, so that nothing logged, recorded,
raised or published holds one.

One place for both, used by the manifest (`publish_target.registry`, `webhook_url`), the registry backends, the
deployment webhook and the error texts they raise (git and S3 errors often quote the remote URL). A credential is a
URL's user info (`TOKEN@host`, `user:password@host`) or a token-like query parameter (`?token=…`, `X-Amz-Signature=…`).
An ssh user name (`ssh://git@host/…`) is a login, not a secret: it is neither refused nor masked, its password is.
"""

import re
from urllib.parse import unquote_plus

MASK = "***"
SSH_SCHEMES = frozenset({"ssh", "git+ssh"})
"""Schemes whose user name is the ssh login (kept); a password is still a credential."""
_TOKEN_WORDS = frozenset(
    {
        "token", "key", "apikey", "secret", "password", "passwd", "pwd", "sig", "signature", "credential",
        "credentials", "auth", "authorization", "session",
    }
)  # fmt: skip
"""A query parameter named one of these, or ending in `_<word>` (access_token, X-Amz-Signature, client_secret,
X-Amz-Security-Token, api_key …), carries a credential."""
REGISTRY_CREDENTIALS_FIX = (
    "for s3:// the publisher resource's S3 settings read AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and "
    "AWS_SESSION_TOKEN (or an instance role or AWS profile); for git+https:// git's credential helper (or "
    "GIT_ASKPASS) supplies the token; for git+ssh:// the ssh agent (a login such as git@ stays allowed)"
)
WEBHOOK_CREDENTIALS_FIX = (
    "set the token in FOUNDRY_WEBHOOK_TOKEN (the publisher resource's webhook_token), which is sent as an "
    "Authorization: Bearer header and never logged"
)
_URL = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*)://([^\s'\"<>`]*)")
_QUERY_ITEM = re.compile(r"([?&;])([^=&;#\s]+)=([^&;#\s]*)")


def is_token_key(name: str) -> bool:
    """Whether a query parameter's name says its value is a credential (case and `-`/`_` do not matter)."""
    key = unquote_plus(name).strip().lower().replace("-", "_")
    return key in _TOKEN_WORDS or any(key.endswith(f"_{word}") for word in _TOKEN_WORDS)


def _split(rest: str) -> tuple[str, str, str]:
    """(user info, host part, the rest from the path on) of what follows `scheme://`."""
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    userinfo, at, host = authority.rpartition("@")
    return (userinfo if at else ""), (host if at else authority), tail


def credential_parts(url: str) -> list[str]:
    """The parts of `url` that carry a credential, named without their values (empty when there is none)."""
    scheme, sep, rest = url.strip().partition("://")
    if not sep:
        return []  # a plain path
    userinfo, _host, tail = _split(rest)
    found = []
    if ":" in userinfo:
        found.append("a password in the user info (user:password@)")
    elif userinfo and scheme.lower() not in SSH_SCHEMES:
        found.append("a user name (TOKEN@host), where tokens are passed")
    query = tail.partition("#")[0].partition("?")[2]
    for item in re.split(r"[&;]", query):
        name = item.partition("=")[0]
        if name and is_token_key(name):
            found.append(f"the query parameter {name[:40]!r}")
    return found


def credential_problem(field: str, url: str, fix: str) -> str | None:
    """The validation message for a credential in `url` (None when there is none): names the field and what carries
    the credential, never its value, and gives `fix`."""
    parts = credential_parts(url)
    if not parts:
        return None
    return (
        f"{field} holds a credential ({', '.join(parts)}); the value is not echoed here. Remove it from the URL: "
        f"{fix}"
    )


def _mask(match: re.Match[str]) -> str:
    scheme, rest = match.group(1), match.group(2)
    userinfo, host, tail = _split(rest)
    if userinfo and (":" in userinfo or scheme.lower() not in SSH_SCHEMES):
        userinfo = MASK
    tail = _QUERY_ITEM.sub(
        lambda q: f"{q.group(1)}{q.group(2)}={MASK}" if is_token_key(q.group(2)) else q.group(0), tail
    )
    return f"{scheme}://{userinfo}{'@' if userinfo else ''}{host}{tail}"


def redact(text: str) -> str:
    """`text` (a URL, or an error message quoting URLs) with every URL's user info and token-like query values
    replaced by `***`; anything that is not a URL is unchanged."""
    return _URL.sub(_mask, text)
