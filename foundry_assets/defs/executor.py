"""Where a run's steps execute: in the run's process (one machine, the default), or each step in its own Kubernetes
pod sized for it (`FOUNDRY_EXECUTOR=k8s`): the stages that use the accelerator on a GPU node, the rest on CPU nodes.

On Kubernetes the pods share FOUNDRY_HOME (a ReadWriteMany volume), and the values steps hand each other are stored
there too (`io_dir`); each GPU pod is given its GPU by the device plugin, so a run's GPU claim is local to its pod.
"""

import os
from pathlib import Path
from typing import Any

import dagster as dg

EXECUTOR_ENV = "FOUNDRY_EXECUTOR"
GPU_STEPS = ("curated_dataset", "trained_adapter", "merged_model", "exam_report")
"""Steps that load a model or embed on the accelerator; raw_data, the publish and the checks need none."""

GPU_POD: dict[str, Any] = {
    "container_config": {
        "resources": {
            "requests": {"cpu": "8", "memory": "48Gi"},
            "limits": {"nvidia.com/gpu": 1, "memory": "96Gi"},
        }
    },
    "pod_spec_config": {
        "node_selector": {"nvidia.com/gpu.present": "true"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    },
}
CPU_POD: dict[str, Any] = {
    "container_config": {
        "resources": {"requests": {"cpu": "1", "memory": "4Gi"}, "limits": {"memory": "8Gi"}}
    },
    "pod_spec_config": {"node_selector": {"node-role/cpu": "true"}},
}


K8S_STEP_EXECUTOR_CONFIG: dict[str, Any] = {
    "step_k8s_config": CPU_POD,
    "per_step_k8s_config": {step: GPU_POD for step in GPU_STEPS},
    "max_concurrent": 2,  # a run's steps follow one another; 2 lets a check run beside the next stage
}


def on_kubernetes() -> bool:
    value = os.environ.get(EXECUTOR_ENV, "in_process")
    if value not in ("in_process", "k8s"):
        raise ValueError(f"{EXECUTOR_ENV}={value!r}: use in_process (one machine) or k8s (a pod per step)")
    return value == "k8s"


def io_dir(foundry_home: Path) -> str | None:
    """Where step outputs are stored: DAGSTER_HOME's storage in process, the shared FOUNDRY_HOME on Kubernetes."""
    return str(foundry_home / "io") if on_kubernetes() else None


def gpu_lock_dir() -> str:
    """GPU claims: per node under FOUNDRY_HOME in process; per pod on Kubernetes (the device plugin hands out GPUs)."""
    return "/tmp/foundry-gpu-locks" if on_kubernetes() else ""


def build_executor() -> dg.ExecutorDefinition:
    if not on_kubernetes():
        return dg.in_process_executor
    from dagster_k8s import k8s_job_executor

    return k8s_job_executor.configured(K8S_STEP_EXECUTOR_CONFIG, name="foundry_k8s_step_executor")
