"""A run's parameters come from the manifest whole (method and compute sections), not copied field by field."""

from foundry_assets.crucible.params import TrainParams
from foundry_assets.manifest import parse_manifest


def test_params_from_the_manifest() -> None:
    manifest = parse_manifest(
        {
            "job_id": "job-params",
            "base_model": "tiny-llama",
            "method_config": {"type": "orpo", "rank": 32, "alpha": 64, "max_steps": 7, "orpo_beta": 0.2},
            "publish_target": {"registry": "/tmp/registry", "tag": "v1"},
            "compute": {"batch_size": 2, "grad_accum": 3},
        }
    )
    params = TrainParams.from_manifest(manifest)
    method = manifest.method_config
    assert (params.rank, params.alpha, params.max_steps, params.orpo_beta) == (32, 64, 7, 0.2)
    assert (params.batch_size, params.grad_accum) == (2, 3)
    assert (params.dropout, params.learning_rate, params.seed) == (
        method.dropout,
        method.learning_rate,
        method.seed,
    )
    assert (params.max_seq_length, params.logging_steps) == (method.max_seq_length, method.logging_steps)
    assert (
        params.optim == "adamw_torch_fused" and params.padding_free is None
    )  # not manifest fields: defaults
