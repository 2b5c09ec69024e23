"""Electronic signatures of a job's release (21 CFR 11.50/11.70): keys, the trusted-signers file, the release record
that is signed, and verification with a named reason. No Dagster here: `foundry keygen|sign|signatures` call it, and
the release gate will.

- `keys`: Ed25519 keys; a private key is only ever stored encrypted by its owner's passphrase (two components).
- `signers`: the trusted-signers file: who may sign, with which key, when, and with which meanings.
- `record`: the job's current release record as the trail and the exam report prove it.
- `signature`: signing that record, and verifying a signature against the trusted signers and the current release.
"""

from typing import Literal, get_args

Meaning = Literal["review", "approve-release", "reject"]
"""What a signature means (21 CFR 11.50(a)(3)): reviewed, approved for release, or rejected."""
MEANINGS: tuple[str, ...] = get_args(Meaning)
PASSPHRASE_ENV = "FOUNDRY_SIGNING_PASSPHRASE"
"""Where automation passes a key's passphrase instead of the prompt; never printed nor recorded."""
