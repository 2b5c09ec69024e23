"""Ed25519 signing keys through `cryptography`. A private key exists on disk only as PKCS#8 PEM encrypted with its
owner's passphrase, so a signature takes two components (21 CFR 11.200(a)): the key file and the passphrase. A key's
identity is the SHA256 of its raw public key (`key_id`), which the trusted-signers file lists."""

import base64
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from foundry_assets.errors import SigningError
from foundry_assets.release import PASSPHRASE_ENV

MIN_PASSPHRASE = 8


def key_id(public: Ed25519PublicKey) -> str:
    """SHA256 (hex) of the raw 32-byte public key: the key's name in the trusted-signers file and in signatures."""
    return hashlib.sha256(public.public_bytes_raw()).hexdigest()


def public_key_text(public: Ed25519PublicKey) -> str:
    """The public key as the trusted-signers file holds it: base64 of its 32 raw bytes."""
    return base64.b64encode(public.public_bytes_raw()).decode("ascii")


def parse_public_key(text: str) -> Ed25519PublicKey:
    """An Ed25519 public key from base64 of its raw bytes or from PEM; ValueError says which form was expected."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_public_key(text.encode("ascii"))
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError(f"the PEM holds a {type(key).__name__}, not an Ed25519 public key")
        return key
    raw = base64.b64decode(text, validate=True)
    if len(raw) != 32:
        raise ValueError(f"base64 of {len(raw)} bytes; an Ed25519 public key is 32 raw bytes (or PEM)")
    return Ed25519PublicKey.from_public_bytes(raw)


def _check_passphrase(passphrase: str) -> bytes:
    if len(passphrase) < MIN_PASSPHRASE:
        raise SigningError(
            f"a signing key needs a passphrase of at least {MIN_PASSPHRASE} characters (the key file alone must "
            f"not be enough to sign); type one at the prompt or set {PASSPHRASE_ENV}"
        )
    return passphrase.encode("utf-8")


@dataclass(frozen=True)
class NewKey:
    """A generated key: the encrypted private PEM (to write 0600, never to print) and the public half's entry."""

    printed_name: str
    private_pem: bytes
    public_key: str
    key_id: str


def generate_key(printed_name: str, passphrase: str) -> NewKey:
    """A new Ed25519 key for `printed_name`, its private half encrypted with `passphrase` (BestAvailableEncryption)."""
    if not printed_name.strip():
        raise SigningError("--name is empty: a signature shows the signer's printed name (21 CFR 11.50)")
    secret = _check_passphrase(passphrase)
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(secret),
    )
    public = private.public_key()
    return NewKey(printed_name.strip(), pem, public_key_text(public), key_id(public))


def write_private_key(folder: Path, key: NewKey) -> Path:
    """Write the encrypted private key to `folder/<name>-<key_id[:12]>.key.pem`, mode 0600, never over a file."""
    slug = re.sub(r"[^a-z0-9]+", "-", key.printed_name.lower()).strip("-") or "signer"
    path = folder / f"{slug}-{key.key_id[:12]}.key.pem"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise SigningError(f"{path} already exists; a key file is never overwritten") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(key.private_pem)
        handle.flush()
        os.fsync(handle.fileno())
    return path


def load_private_key(path: str | Path, passphrase: str) -> Ed25519PrivateKey:
    """The signing key in `path`, decrypted with `passphrase`. An unencrypted key, a wrong passphrase or another
    kind of key is a SigningError naming the file."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise SigningError(f"cannot read the key file {path}: {e.strerror}") from None
    if not passphrase:
        raise SigningError(f"no passphrase given for {path}: type it at the prompt or set {PASSPHRASE_ENV}")
    try:
        key = serialization.load_pem_private_key(data, password=passphrase.encode("utf-8"))
    except TypeError:  # cryptography: "Password was given but private key is not encrypted"
        raise SigningError(
            f"{path} is not protected by a passphrase: a signing key needs two components (the file and its "
            "passphrase); make a new one with `foundry keygen`"
        ) from None
    except ValueError:
        what = "wrong passphrase" if b"ENCRYPTED PRIVATE KEY" in data else "not a PEM private key"
        raise SigningError(f"{path}: {what}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError(f"{path} holds a {type(key).__name__}; signatures use Ed25519 (`foundry keygen`)")
    return key
