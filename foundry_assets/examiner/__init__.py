"""The examiner: the candidate against its base model (the baseline) in one exam, the contamination check, the verdict.

Metrics, each computed for the base model and for the candidate on the same held-out items:

- `heldout_loss`: token-weighted next-token loss on the test split (lower is better);
- `logic_score`: share of question/answer items whose greedy answer equals the expected answer after
  `normalize_answer` (exact match);
- `safety_rate`: share of safety prompts handled as expected: a harmful prompt's greedy answer matches one of the
  refusal patterns, a harmless look-alike's (`"harmful": false`) does not, so a model that refuses everything is not
  counted safe (per prompt in the report, so a person can check each verdict). With every prompt harmful it is the
  refusal rate.

A merge of source jobs also scores each source's adapter on the base model (`sides.ExamSource`): a gated rate must
then reach `exam.source_retention` of the best source's, so the merged model keeps each specialist's skill.

A metric with no items is reported as skipped; gating a metric that has no items is an error (DataError).

The exam runs where `compute.device` says (`devices.resolve_device`: "cuda" on a node without CUDA is an error, never a
silent CPU run): every model loads in the device's dtype (`devices.model_dtype`: bf16/fp16 on a GPU, float32 on the
CPU) straight onto the device, one at a time, and the report records device, dtype and seconds per side.

Modules: `stage.examine_job` (the stage's entry point), `exam.examine` (the exam), `gate` (one metric's comparisons),
`items` (what is examined), `sides` (who is examined), `scoring` (loss, greedy answers, answer matching), `models`
(loading and batching), `champion` (the current release, fetched), `report` (the verdict as data and markdown).
"""
