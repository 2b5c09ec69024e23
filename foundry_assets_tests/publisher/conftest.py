"""Fixtures for the publisher: a staged artifact, and a live S3 server (moto) on the loopback interface."""

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ACCESS_KEY = "AKIAFOUNDRYTESTKEY01"
SECRET_KEY = "s3cr3t-Zq8wX-never-log-me-7Hk2"
"""Distinctive fake credentials: the tests assert they never reach a log or a result."""


def stage(root: Path, content: bytes = b"weights", *, name: str = "staging", folder: str = "") -> Path:
    """A small staged artifact: adapter safetensors + config beside an exam report, at the root (`folder` ""), or
    in `folder` as tags published before the root layout held them ("adapter")."""
    staging = root / name
    (staging / folder).mkdir(parents=True)
    (staging / folder / "adapter_model.safetensors").write_bytes(content)
    (staging / folder / "adapter_config.json").write_text('{"r": 8}')
    (staging / "exam_report.json").write_text('{"passed": true}')
    return staging


@pytest.fixture(scope="session")
def aws_env() -> Iterator[None]:
    """Fake credentials and region from environment variables, and no shared AWS config files."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        mp.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            mp.delenv(name, raising=False)
        yield


def start_moto(port: int = 0) -> Any:
    """Start moto's threaded S3 server on 127.0.0.1 (`port` 0: any free port)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server


@pytest.fixture(scope="session")
def moto_server(aws_env: None) -> Iterator[Any]:
    """One live S3 HTTP server for the session."""
    server = start_moto()
    yield server
    server.stop()


def make_client(port: int) -> Any:
    """A boto3 S3 client for 127.0.0.1:`port` with credentials from the environment and no retries."""
    import boto3
    from botocore.config import Config

    config = Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=2, read_timeout=10)
    return boto3.session.Session().client("s3", endpoint_url=f"http://127.0.0.1:{port}", config=config)


@pytest.fixture(scope="session")
def s3_client(moto_server: Any) -> Any:
    """A client of the session's S3 server (boto3 clients are thread-safe; building one costs ~0.5 s)."""
    return make_client(moto_server.get_host_and_port()[1])


@pytest.fixture()
def bucket(s3_client: Any) -> str:
    """A fresh, empty bucket."""
    name = f"models-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture()
def staged(tmp_path: Path) -> Callable[..., Path]:
    """Build a staged artifact under the test's tmp_path: `staged(content=b"...", name="staging", folder="")`."""

    def build(content: bytes = b"weights", *, name: str = "staging", folder: str = "") -> Path:
        return stage(tmp_path, content, name=name, folder=folder)

    return build
