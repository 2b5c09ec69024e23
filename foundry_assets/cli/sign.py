"""`foundry keygen`, `foundry sign`, `foundry signatures`: electronic signatures of a job's release (21 CFR 11.50).

Exit codes follow the `foundry` CLI: 0 done (every signature verified); 1 `signatures` found one that does not count;
2 refused input (no passed exam of the job's current lot, an empty reason, a wrong passphrase, an untrusted key).
A passphrase comes from the prompt or FOUNDRY_SIGNING_PASSPHRASE and is never printed nor recorded.
"""

import argparse
import getpass
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import wraps
from pathlib import Path
from typing import Any

import yaml

from foundry_assets.actor import Actor
from foundry_assets.cli.exits import EXIT_FAILED, EXIT_INVALID, EXIT_OK
from foundry_assets.errors import AuditError, SigningError
from foundry_assets.release import MEANINGS, PASSPHRASE_ENV


def _refusals(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A refused signature (or a broken trail) is one short line on stderr and exit 2."""

    @wraps(command)
    def run(args: argparse.Namespace) -> int:
        from foundry_assets.publisher.gate import ReleaseRefused

        try:
            return command(args)
        except (SigningError, ReleaseRefused, AuditError) as e:
            print(f"foundry: {e}", file=sys.stderr)
            return EXIT_INVALID

    return run


def _passphrase(*, confirm: bool) -> str:
    if (given := os.environ.get(PASSPHRASE_ENV)) is not None:
        return given
    passphrase = getpass.getpass("Passphrase: ")
    if confirm and getpass.getpass("Repeat the passphrase: ") != passphrase:
        raise SigningError("the two passphrases differ; nothing was written")
    return passphrase


@_refusals
def cmd_keygen(args: argparse.Namespace) -> int:
    """Write a new encrypted signing key and print the trusted-signers entry for its public half."""
    from foundry_assets.release.keys import generate_key, write_private_key
    from foundry_assets.release.signers import trusted_signers_path

    key = generate_key(args.name, _passphrase(confirm=True))
    path = write_private_key(Path(args.out), key)
    now = datetime.now(UTC).replace(microsecond=0)
    entry = {
        "key_id": key.key_id,
        "printed_name": key.printed_name,
        "public_key": key.public_key,
        "valid_from": now,
        "expires": now + timedelta(days=args.valid_days),
        "meanings": list(MEANINGS),
    }
    print(f"wrote {path} (mode 0600, encrypted by your passphrase): keep it to yourself", file=sys.stderr)
    print(
        f"# QA adds this entry under `signers:` in {trusted_signers_path()} (narrow `meanings` to what this "
        "person may sign):"
    )
    print(yaml.safe_dump([entry], sort_keys=False), end="")
    return EXIT_OK


@_refusals
def cmd_sign(args: argparse.Namespace) -> int:
    """Sign the job's current release record and append the signature to its audit trail."""
    from foundry_assets.audit import AuditTrail
    from foundry_assets.audit_events import Event
    from foundry_assets.release.keys import key_id, load_private_key
    from foundry_assets.release.record import current_release
    from foundry_assets.release.signature import check_reason, sign_release
    from foundry_assets.release.signers import load_trusted_signers, trusted_signers_path
    from foundry_assets.workspace import Workspace, default_root

    workspace = Workspace(default_root())
    release = current_release(workspace, args.job_id)
    trusted = load_trusted_signers()
    reason = check_reason(args.reason)
    key = load_private_key(args.key, _passphrase(confirm=False))
    signer = trusted.get(key_id(key.public_key()))
    if signer is None:
        raise SigningError(
            f"the key in {args.key} is not in the trusted-signers file {trusted_signers_path()}; QA adds the "
            "entry `foundry keygen` printed"
        )
    payload = sign_release(release, key, signer, meaning=args.meaning, reason=reason)
    trail = AuditTrail(workspace.audit_path(args.job_id))
    # the record's actor is the signer whose key signed (a person), with the reason they gave
    signer_actor = Actor(kind="user", name=signer.printed_name)
    record = trail.append(
        Event.RELEASE_SIGNED, job_id=args.job_id, actor=signer_actor, reason=reason, **payload
    )
    m = payload["manifestation"]
    print(
        f"signed {args.job_id} lot {m['lot_number'][:12]}… ({m['artifact']}): {m['meaning']} by "
        f"{m['printed_name']} at {_utc(m['signed_at'])}; audit record #{record['seq']}"
    )
    return EXIT_OK


def _utc(value: Any) -> str:
    try:
        return datetime.fromisoformat(str(value)).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return str(value)


@_refusals
def cmd_signatures(args: argparse.Namespace) -> int:
    """Every signature of the job, verified against the trusted signers and the job's current release."""
    from foundry_assets.audit import AuditTrail
    from foundry_assets.publisher.gate import ReleaseRefused
    from foundry_assets.release.record import current_release
    from foundry_assets.release.signature import approvals
    from foundry_assets.release.signers import load_trusted_signers
    from foundry_assets.workspace import Workspace, default_root

    workspace = Workspace(default_root())
    records = AuditTrail(workspace.audit_path(args.job_id)).records()
    trusted = load_trusted_signers()
    try:
        release = current_release(workspace, args.job_id, records)
    except ReleaseRefused as e:
        print(f"note: job {args.job_id} has nothing releasable now: {e}", file=sys.stderr)
        release = None
    found = approvals(records, trusted, current_release=release)
    if not found:
        print(f"job {args.job_id}: no signatures")
    for approval in found:
        m = approval.manifestation
        print(
            f"#{approval.record['seq']}  {_utc(m.get('signed_at'))}  {m.get('printed_name')}  {m.get('meaning')}  "
            f"reason: {m.get('reason')!r}  {'verified' if approval.valid else f'FAILS: {approval.reason}'}"
        )
    return EXIT_OK if all(a.valid for a in found) else EXIT_FAILED


def add_sign_parsers(sub: Any) -> None:
    """Register keygen, sign and signatures on the `foundry` subparsers (each maps its refusals to exit 2)."""
    p = sub.add_parser(
        "keygen", help="make an encrypted Ed25519 signing key; print its trusted-signers entry"
    )
    p.add_argument("--name", required=True, help="your printed name, as signatures will show it")
    p.add_argument("--out", required=True, help="folder for the private key file (written 0600)")
    p.add_argument("--valid-days", type=int, default=365, help="the printed entry's validity (default 365)")
    p.set_defaults(func=cmd_keygen)
    p = sub.add_parser(
        "sign", help="sign a job's release record (lot, exam report, artifact files) with your key"
    )
    p.add_argument("job_id")
    p.add_argument("--meaning", required=True, choices=MEANINGS, help="what your signature means")
    p.add_argument("--reason", required=True, help="why you sign (recorded with the signature)")
    p.add_argument("--key", required=True, help="your private key file (`foundry keygen`)")
    p.set_defaults(func=cmd_sign)
    p = sub.add_parser(
        "signatures",
        help="list a job's signatures, each verified or the reason it fails (exit 1 if any fails)",
    )
    p.add_argument("job_id")
    p.set_defaults(func=cmd_signatures)
