"""A throwaway PostgreSQL 15 cluster for tests: initdb in a temporary folder as the
``postgres`` user, listening on 127.0.0.1 on a free port (unix socket in the folder too),
password authentication (so that redaction of the password is tested for real)."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PG_BIN = Path(os.environ.get("CX_PG_BIN", "/usr/lib/postgresql/15/bin"))
USER, PASSWORD, DB = "cx", "s3cret-pw", "cx"


def missing_reason() -> str | None:
    """Why a cluster cannot be started here, or None."""
    for tool in ("initdb", "pg_ctl", "postgres"):
        if not (PG_BIN / tool).exists():
            return f"PostgreSQL binaries not found ({PG_BIN / tool}); set CX_PG_BIN"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root but there is no 'postgres' user to run the cluster as"
    return None


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a throwaway server of the tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    folder: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgres://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{DB}"

    def _run(self, *cmd: str) -> subprocess.CompletedProcess:
        if os.geteuid() == 0:  # initdb refuses root: run as postgres
            cmd = ("runuser", "-u", "postgres", "--", *cmd)
        return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120)

    def start(self) -> None:
        data = self.folder / "data"
        pwfile = self.folder / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres")
            shutil.chown(pwfile, "postgres")
        self._run(str(PG_BIN / "initdb"), "-D", str(data), "-U", USER, "--pwfile", str(pwfile),
                  "--auth=scram-sha-256", "-E", "UTF8", "--locale=C")
        opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} "
                f"-c unix_socket_directories={self.folder} -c fsync=off "
                "-c timezone=UTC -c max_connections=50")
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", opts, "-w", "-t", "60",
                  "-l", str(self.folder / "log"), "start")
        import psycopg

        for _ in range(50):
            try:
                with psycopg.connect(host="127.0.0.1", port=self.port, user=USER,
                                     password=PASSWORD, dbname="postgres",
                                     autocommit=True) as c:
                    c.execute(f"CREATE DATABASE {DB}")
                break
            except psycopg.OperationalError:
                time.sleep(0.2)

    def stop(self) -> None:
        try:
            self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.folder / "data"), "-m",
                      "immediate", "-w", "stop")
        except Exception:  # already down: removing the folder is all that is left
            pass
        shutil.rmtree(self.folder, ignore_errors=True)


def start_cluster() -> Cluster:
    folder = Path(tempfile.mkdtemp(prefix="cx-pg-"))
    os.chmod(folder, 0o755)
    cluster = Cluster(folder, free_port())
    try:
        cluster.start()
    except Exception:
        cluster.stop()
        raise
    return cluster
