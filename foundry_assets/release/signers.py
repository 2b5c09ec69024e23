"""The trusted-signers file: whose signatures count, with which key, for which meanings, in which period.

It is YAML, kept by whoever qualifies signers (QA), at FOUNDRY_TRUSTED_SIGNERS or else `FOUNDRY_HOME/
trusted_signers.yaml` (`Workspace.trusted_signers_path`):

    signers:
      - key_id: 3f1c…            # sha256 of the raw public key (`foundry keygen` prints the whole entry)
        printed_name: Jane Roe
        public_key: MCow…        # base64 of the 32 raw bytes, or a PEM block
        valid_from: 2026-12-01T00:00:00Z
        expires: 2027-12-01T00:00:00Z
        meanings: [review, approve-release, reject]

A signature is checked against the entry of its key at the time it was made: removing an entry or moving `expires`
earlier withdraws trust in the key's signatures from then on.
"""

import os
from datetime import UTC, datetime
from pathlib import Path

import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from foundry_assets.errors import SigningError
from foundry_assets.release import Meaning
from foundry_assets.release.keys import key_id, parse_public_key
from foundry_assets.workspace import Workspace, default_root

SIGNERS_ENV = "FOUNDRY_TRUSTED_SIGNERS"


class TrustedSigner(BaseModel):
    """One person's signing key and what it may sign."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key_id: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="SHA256 (lowercase hex) of the raw Ed25519 public key."
    )
    printed_name: str = Field(
        min_length=1, description="The signer's printed name, shown with each signature (21 CFR 11.50)."
    )
    public_key: str = Field(description="The Ed25519 public key: base64 of its 32 raw bytes, or PEM.")
    valid_from: AwareDatetime = Field(description="First moment (UTC) a signature by this key counts.")
    expires: AwareDatetime = Field(
        description="Moment (UTC) from which signatures by this key no longer count."
    )
    meanings: list[Meaning] = Field(
        min_length=1, description="Meanings this signer may sign: review, approve-release, reject."
    )

    @field_validator("public_key")
    @classmethod
    def _parses(cls, value: str) -> str:
        try:
            parse_public_key(value)
        except ValueError as e:
            raise ValueError(
                f"not an Ed25519 public key ({e}); paste the value `foundry keygen` printed"
            ) from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "TrustedSigner":
        actual = key_id(self.verifier())
        if actual != self.key_id:
            raise ValueError(
                f"key_id does not match public_key (its sha256 is {actual}); fix whichever was mistyped"
            )
        if self.expires <= self.valid_from:
            raise ValueError(
                f"expires {self.expires.isoformat()} is not after valid_from {self.valid_from.isoformat()}"
            )
        return self

    def verifier(self) -> Ed25519PublicKey:
        return parse_public_key(self.public_key)

    def problem(self, meaning: str, at: datetime) -> str | None:
        """Why a signature by this key with `meaning` made at `at` does not count, or None: the key's period and the
        meanings allowed (the named reasons of `signature.Refusal`)."""
        if at < self.valid_from:
            return f"key not yet valid: signed {at:%Y-%m-%d %H:%M:%S} UTC, valid from {self.valid_from.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
        if at >= self.expires:
            return f"key expired: signed {at:%Y-%m-%d %H:%M:%S} UTC, expired {self.expires.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
        if meaning not in self.meanings:
            return f"meaning not allowed: {self.printed_name} may sign {', '.join(self.meanings)}, not {meaning!r}"
        return None


class TrustedSigners(BaseModel):
    """The trusted-signers file's content."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    signers: list[TrustedSigner] = Field(description="Every trusted signing key, one entry each.")

    @field_validator("signers")
    @classmethod
    def _distinct(cls, value: list[TrustedSigner]) -> list[TrustedSigner]:
        ids = [s.key_id for s in value]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise ValueError(f"key_id {twice[0][:12]}… is listed more than once; keep one entry per key")
        return value

    def get(self, key: str) -> TrustedSigner | None:
        return next((s for s in self.signers if s.key_id == key), None)


def trusted_signers_path() -> Path:
    """FOUNDRY_TRUSTED_SIGNERS, else `trusted_signers.yaml` in the foundry's folder."""
    if path := os.environ.get(SIGNERS_ENV):
        return Path(path)
    return Workspace(default_root()).trusted_signers_path()


def load_trusted_signers(path: str | Path | None = None) -> TrustedSigners:
    """The trusted signers of `path` (default `trusted_signers_path()`); SigningError names the file and each bad
    field (`signers.0.expires: …`)."""
    path = Path(path) if path is not None else trusted_signers_path()
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SigningError(
            f"no trusted-signers file at {path}: add each signer's entry (`foundry keygen` prints it) there, or set "
            f"{SIGNERS_ENV} to the file"
        ) from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise SigningError(f"{path} cannot be read as YAML: {str(e).splitlines()[0]}") from None
    try:
        return TrustedSigners.model_validate(document)
    except ValidationError as e:
        lines = [
            f"  {'.'.join(str(p) for p in item['loc']) or '(document)'}: {item['msg'].removeprefix('Value error, ')}"
            for item in e.errors()[:20]
        ]
        raise SigningError(f"{path} is invalid: {len(e.errors())} problem(s)\n" + "\n".join(lines)) from None
