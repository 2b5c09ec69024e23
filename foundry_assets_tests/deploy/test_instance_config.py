"""Resource limits in both instance configurations, and the Kubernetes values checked with the tools at hand."""

import shutil
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from foundry_assets_tests.deploy.conftest import REPO

HELM_VALUES = REPO / "deploy" / "helm" / "values.yaml"


def _instance(tmp_path: Path, config: Path, monkeypatch: pytest.MonkeyPatch) -> dg.DagsterInstance:
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(config, home / "dagster.yaml")
    return dg.DagsterInstance.from_config(str(home))


@pytest.mark.parametrize("config", ["foundry_assets/dagster.yaml", "deploy/dagster-postgres.yaml"])
def test_gpu_pool_retries_and_monitoring_are_configured(config: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from dagster._core.instance.config import dagster_instance_config

    home = REPO / config
    document = yaml.safe_load(home.read_text())
    validated, _ = dagster_instance_config(str(home.parent), config_filename=home.name)  # raises on a bad key
    assert validated["run_monitoring"]["enabled"] is True
    assert validated["run_retries"]["enabled"] is True
    assert validated["run_retries"]["max_retries"] >= 1
    assert validated["run_retries"]["retry_on_asset_or_op_failure"] is False  # a failed exam is never retried
    assert validated["run_monitoring"]["free_slots_after_run_end_seconds"] > 0  # a dead run's slot comes back
    assert document["concurrency"]["pools"]["default_limit"] == 1


def test_embedded_instance_limits_the_gpu_pool_to_one_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from foundry_assets.definitions import defs

    assert defs.resolve_assets_def("trained_adapter").op.pool == "gpu"
    with _instance(tmp_path, REPO / "foundry_assets" / "dagster.yaml", monkeypatch) as instance:
        assert instance.run_monitoring_enabled and instance.run_retries_enabled
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert type(instance.run_launcher).__name__ == "ProcessRunLauncher"
        assert instance.run_launcher.supports_check_run_worker_health
        assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] > 0
        assert instance.run_retries_max_retries == 1 and not instance.run_retries_retry_on_asset_or_op_failure
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
        storage = instance.event_log_storage
        # what the executor does before the pool's first step: create the pool at dagster.yaml's default limit
        assert storage.initialize_concurrency_limit_to_default("gpu")
        assert storage.get_concurrency_info("gpu").slot_count == 1
        assert storage.claim_concurrency_slot("gpu", "run-a", "trained_adapter").is_claimed
        assert not storage.claim_concurrency_slot("gpu", "run-b", "trained_adapter").is_claimed
        storage.free_concurrency_slots_for_run("run-a")
        assert storage.claim_concurrency_slot("gpu", "run-b", "trained_adapter").is_claimed


def _values() -> dict[str, Any]:
    values = yaml.safe_load(HELM_VALUES.read_text())
    assert isinstance(values, dict)
    return values


def test_helm_values_run_each_step_in_a_pod_of_its_own_on_cpu_run_pods() -> None:
    values = _values()
    launcher = values["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    run_config = launcher["config"]["k8sRunLauncher"]["runK8sConfig"]
    assert (
        "nvidia.com/gpu" not in run_config["containerConfig"]["resources"]["limits"]
    )  # it only orchestrates
    assert run_config["podSpecConfig"]["nodeSelector"] == {"node-role/cpu": "true"}
    [deployment] = values["dagster-user-deployments"]["deployments"]
    assert deployment["dagsterApiGrpcArgs"] == ["--module-name", "foundry_assets.definitions"]
    assert {"name": "FOUNDRY_EXECUTOR", "value": "k8s"} in deployment["env"]
    assert values["postgresql"]["enabled"] is False and values["postgresql"]["postgresqlHost"]
    daemon = values["dagsterDaemon"]
    assert daemon["runMonitoring"]["enabled"] and daemon["runRetries"]["enabled"]
    assert daemon["runRetries"]["retryOnAssetOrOpFailure"] is False


def test_helm_run_launcher_config_validates_with_dagster_k8s() -> None:
    """The chart renders runLauncher.config.k8sRunLauncher into the K8sRunLauncher's config; validate that config
    with dagster-k8s's own schema, and each Kubernetes fragment with the kubernetes client's models."""
    import kubernetes
    from dagster._config import process_config
    from dagster_k8s import K8sRunLauncher
    from dagster_k8s.models import k8s_model_from_dict, k8s_snake_case_dict

    launcher = _values()["runLauncher"]["config"]["k8sRunLauncher"]
    run_config = launcher["runK8sConfig"]
    rendered = {  # what the chart's run-launcher template writes into dagster.yaml (camelCase → snake_case)
        "dagster_home": "/opt/dagster/dagster_home",
        "instance_config_map": "dagster-instance",
        "postgres_password_secret": "dagster-postgresql-secret",
        "image_pull_policy": launcher["imagePullPolicy"],
        "env_secrets": [s["name"] for s in launcher["envSecrets"]],
        "volumes": launcher["volumes"],
        "volume_mounts": launcher["volumeMounts"],
        "run_k8s_config": {
            "container_config": run_config["containerConfig"],
            "pod_spec_config": run_config["podSpecConfig"],
        },
    }
    result = process_config(K8sRunLauncher.config_type(), rendered)
    assert result.success, [e.message for e in result.errors or []]

    def model(model_class: Any, fragment: dict[str, Any]) -> Any:  # raises on a key Kubernetes does not know
        return k8s_model_from_dict(model_class, k8s_snake_case_dict(model_class, fragment))

    container = model(kubernetes.client.V1Container, {"name": "run", **run_config["containerConfig"]})
    assert container.resources.requests["cpu"] == "1"
    pod = model(kubernetes.client.V1PodSpec, {"containers": [], **run_config["podSpecConfig"]})
    assert pod.node_selector == {"node-role/cpu": "true"}
    for volume in launcher["volumes"]:
        model(kubernetes.client.V1Volume, volume)
    for mount in launcher["volumeMounts"]:
        model(kubernetes.client.V1VolumeMount, mount)


def test_on_kubernetes_gpu_stages_get_gpu_pods_and_the_rest_cpu_pods(monkeypatch: pytest.MonkeyPatch) -> None:
    """FOUNDRY_EXECUTOR=k8s: the code location's executor is dagster-k8s's step executor, its config valid for it,
    each stage's pod sized for it (validated with the kubernetes client's models), step outputs on FOUNDRY_HOME."""
    import kubernetes
    from dagster._config import process_config
    from dagster_k8s import k8s_job_executor
    from dagster_k8s.models import k8s_model_from_dict, k8s_snake_case_dict

    from foundry_assets.defs.executor import (
        CPU_POD,
        GPU_POD,
        GPU_STEPS,
        K8S_STEP_EXECUTOR_CONFIG,
        build_executor,
    )

    monkeypatch.setenv("FOUNDRY_EXECUTOR", "k8s")
    monkeypatch.setenv("FOUNDRY_HOME", "/foundry")
    from foundry_assets.definitions import build_definitions, build_resources

    assert build_executor().name == "foundry_k8s_step_executor"
    config = process_config(k8s_job_executor.config_schema.as_field().config_type, K8S_STEP_EXECUTOR_CONFIG)
    assert config.success, [e.message for e in config.errors or []]
    per_step = config.value["per_step_k8s_config"]
    assert (
        set(per_step)
        == set(GPU_STEPS)
        == {"curated_dataset", "trained_adapter", "merged_model", "exam_report"}
    )
    defs = build_definitions()
    steps = {node.name for node in defs.resolve_job_def("foundry_job").graph.node_dict.values()}
    assert set(GPU_STEPS) <= steps  # the names are the job's step keys
    for fragment, gpus in ((GPU_POD, "1"), (CPU_POD, None)):
        container = k8s_model_from_dict(
            kubernetes.client.V1Container,
            k8s_snake_case_dict(
                kubernetes.client.V1Container, {"name": "step", **fragment["container_config"]}
            ),
        )
        assert (container.resources.limits or {}).get("nvidia.com/gpu") == gpus
        k8s_model_from_dict(
            kubernetes.client.V1PodSpec,
            k8s_snake_case_dict(
                kubernetes.client.V1PodSpec, {"containers": [], **fragment["pod_spec_config"]}
            ),
        )
    resources = build_resources()
    assert resources["io_manager"].base_dir == "/foundry/io"  # step pods share outputs through FOUNDRY_HOME
    assert resources["gpu"].lock_dir.startswith("/tmp/")  # the device plugin hands each pod its GPU


def test_one_machine_runs_steps_in_the_run_process(monkeypatch: pytest.MonkeyPatch) -> None:
    from foundry_assets.defs.executor import build_executor

    monkeypatch.delenv("FOUNDRY_EXECUTOR", raising=False)
    assert build_executor().name == "in_process"
    monkeypatch.setenv("FOUNDRY_EXECUTOR", "slurm")
    with pytest.raises(ValueError, match="FOUNDRY_EXECUTOR='slurm': use in_process"):
        build_executor()
