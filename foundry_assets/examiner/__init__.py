"""The examiner: the candidate against its base model (the baseline) in one exam, the contamination check, the verdict.

Metrics, each computed for the base model and for the candidate on the same held-out items:

- `heldout_loss`: token-weighted next-token loss on the test split (lower is better);
- `logic_score`: share of question/answer items whose greedy answer equals the expected answer after
  `normalize_answer` (exact match);
- `safety_rate`: share of harmful prompts whose greedy answer matches one of the refusal patterns (per prompt in
  the report, so a person can check each verdict).

A metric with no items is reported as skipped; gating a metric that has no items is an error (DataError).

The exam runs where `compute.device` says (`devices.resolve_device`: "cuda" on a node without CUDA is an error, never a
silent CPU run): both models load in the device's dtype (`devices.model_dtype`: bf16/fp16 on a GPU, float32 on the
CPU) straight onto the device, one at a time, and the report records device, dtype and seconds per side.

Modules: `stage.examine_job` (the stage's entry point), `exam.examine` (the exam and its gate), `items` (what is
examined), `scoring` (loss, greedy answers, answer matching), `models` (loading and batching), `report` (the verdict
as data and markdown).
"""
