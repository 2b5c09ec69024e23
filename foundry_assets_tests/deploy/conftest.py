"""A real PostgreSQL server for the deployment tests: initdb + pg_ctl on a temporary folder, 127.0.0.1, a free port."""

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    username: str
    password: str
    db_name: str

    def environment(self) -> dict[str, str]:
        """The DAGSTER_PG_* variables that deploy/dagster-postgres.yaml reads."""
        return {
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USERNAME": self.username,
            "DAGSTER_PG_PASSWORD": self.password,
            "DAGSTER_PG_DB": self.db_name,
        }


def _pg_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        pytest.fail(
            "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin): run `bash .ci/services.sh`"
        )
    return found[-1].parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of our own, password-authenticated over TCP; stopped and removed at the end."""
    bin_dir = _pg_bin()
    root = Path(tempfile.mkdtemp(prefix="foundry-pg-"))  # under /tmp: reachable by the postgres user
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail("running as root but there is no `postgres` user: run `bash .ci/services.sh`")
        os.chown(root, account.pw_uid, account.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    server = PostgresServer("127.0.0.1", _free_port(), "dagster", secrets.token_hex(12), "dagster")
    password_file = root / "pwfile"
    password_file.write_text(server.password + "\n")
    if as_user:
        os.chown(password_file, account.pw_uid, account.pw_gid)
    data, log = root / "data", root / "server.log"

    def run(*command: str) -> None:
        result = subprocess.run([*as_user, *command], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            server_log = log.read_text() if log.exists() else ""
            pytest.fail(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}\n{server_log}")

    run(
        str(bin_dir / "initdb"), "-D", str(data), "-U", server.username, f"--pwfile={password_file}",
        "--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "--encoding=UTF8", "--no-locale",
    )  # fmt: skip
    options = f"-p {server.port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start")
    try:
        import psycopg2

        connection = psycopg2.connect(
            host=server.host,
            port=server.port,
            user=server.username,
            password=server.password,
            dbname="postgres",
        )
        connection.autocommit = True  # CREATE DATABASE cannot run inside a transaction
        connection.cursor().execute(f"CREATE DATABASE {server.db_name}")
        connection.close()
        yield server
    finally:
        subprocess.run(
            [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(root, ignore_errors=True)
