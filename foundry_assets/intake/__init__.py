"""Intake (Select): receive a job — its manifest and data drop — snapshot the drop and fix the lot number.

A drop is a folder (local, or under an S3 prefix) that holds a `manifest.yaml` and the data it names. It goes through
three moves: list it (`drops`: a cheap fingerprint of its files) and inspect it (`plan`: the manifest parses, its data
lies inside the drop and is JSONL, its job_id is free) — the sensor does these and writes nothing, so a preview of the
sensor is a dry run — then, as the first step of the run the sensor requested, receive it (`receive`: copy manifest
and data into the workspace under a content-addressed folder and register the manifest). Registering the copy (whose
path holds the content hash) makes a `job_id` reused with different data *or* a different manifest a refusal of
`Workspace.register`, not a silent second job.

The ledger (`ledger`, the sensor's cursor) remembers every drop by fingerprint, so a drop is evaluated once per
content: a valid one requests one run, an invalid one is reported once (with its reason, kept in the ledger) and then
left alone until its files change. The Select stage's entry point, `snapshot_drop` (`stage`), copies the registered
job's data into its job folder and fixes the lot number (`lot`). No Dagster in here; `defs/sensors.py` and
`defs/intake.py` are the thin layers over it.
"""
