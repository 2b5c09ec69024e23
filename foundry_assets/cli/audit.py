"""`foundry audit verify` and `foundry audit report`: the auditor's tools.

Exit codes as the rest of the CLI: 0 intact / complete and consistent, 1 a broken chain or a disagreement.
"""

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from foundry_assets.audit_report import SignatureCheck
    from foundry_assets.workspace import Workspace

from foundry_assets.cli.exits import EXIT_FAILED, EXIT_OK
from foundry_assets.cli.exits import fail as _fail


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from foundry_assets.audit import verify_audit_log

    result = verify_audit_log(args.file, expected_head=args.head)
    if not result.ok:
        return _fail(f"{args.file}: line {result.first_bad_line}: {result.reason}", EXIT_FAILED)
    print(f"OK: {result.records} records, chain intact, head {result.head}")
    return EXIT_OK


def cmd_audit_report(args: argparse.Namespace) -> int:
    import dagster as dg

    from foundry_assets.audit_report import build_report
    from foundry_assets.defs.event_log import job_event_log
    from foundry_assets.runner import ensure_dagster_home
    from foundry_assets.workspace import Workspace, default_root

    home = ensure_dagster_home()
    workspace = Workspace(default_root())
    manifest = workspace.load(args.job_id)  # ManifestError (exit 2) for a job that was never registered
    with dg.DagsterInstance.from_config(str(home)) as instance:
        materializations, checks = job_event_log(instance, args.job_id)
    report = build_report(
        args.job_id,
        manifest=manifest,
        trail_path=workspace.audit_path(args.job_id),
        materializations=materializations,
        checks=checks,
        check_signature=_signature_check(workspace, args.job_id),
    )
    text = report.to_html() if args.html else report.to_markdown()
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output}")
    else:
        print(text, end="")
    if not report.ok:
        return _fail(f"job {args.job_id}: {len(report.problems)} problem(s) in its chain", EXIT_FAILED)
    return EXIT_OK


def _signature_check(workspace: "Workspace", job_id: str) -> "SignatureCheck":
    """Each signature verified against the trusted signers and the job's current release (none: every signature
    says why it cannot be verified)."""
    from foundry_assets.errors import FoundryError
    from foundry_assets.release.record import current_release
    from foundry_assets.release.signature import verify_signature
    from foundry_assets.release.signers import load_trusted_signers

    try:
        trusted = load_trusted_signers()
    except FoundryError as e:
        problem = f"not verified: {e}"
        return lambda _record: problem
    try:
        release = current_release(workspace, job_id)
    except FoundryError:  # no passed exam of the current lot: every signature says "no release"
        release = None
    return lambda record: verify_signature(record.get("data") or {}, trusted=trusted, current_release=release)


def add_audit_parsers(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """audit verify, audit report: the auditor's tools."""
    audit = sub.add_parser("audit", help="audit-trail tools").add_subparsers(
        dest="audit_command", required=True
    )
    p = audit.add_parser("verify", help="check an audit log's hash chain (exit 0 intact, 1 broken)")
    p.add_argument("file")
    p.add_argument("--head", help="the audit_head recorded in Dagster metadata; catches a truncated tail")
    p.set_defaults(func=cmd_audit_verify)
    p = audit.add_parser(
        "report",
        help="a job's chain (manifest, hashes, curation, training, merge, exam, publish) cross-checked against the "
        "audit trail and the Dagster event log (exit 0 complete and consistent, 1 a disagreement or missing link)",
    )
    p.add_argument("job_id")
    p.add_argument("--html", action="store_true", help="write HTML instead of markdown")
    p.add_argument("--output", "-o", help="write the report to this file instead of standard output")
    p.set_defaults(func=cmd_audit_report)
