"""A throwaway local Spark Connect server for the tests (issue 14: ``sc://`` sources).

The server is pyspark's own: ``spark-submit --class
org.apache.spark.sql.connect.service.SparkConnectServer`` (the class is in the
``spark-connect`` jar pyspark 4 ships in ``pyspark/jars``), local mode, listening on
127.0.0.1 on a free port, in its own process group so that :meth:`Server.stop` ends it and
everything it started (also when tests fail: the fixture's ``finally``).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from engines.pgcluster import free_port

CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"
#: Seconds to wait for the server to listen (JVM start; minutes on a loaded machine).
START_TIMEOUT_S = 300


def _spark_home() -> Path | None:
    spec = importlib.util.find_spec("pyspark")
    return Path(spec.origin).parent if spec and spec.origin else None


def missing_reason() -> str | None:
    """Why a local Spark Connect server and client cannot run here, or None."""
    from engines.conftest import spark_missing_reason

    reason = spark_missing_reason()
    if reason:
        return reason
    for module, package in (("grpc", "grpcio"), ("grpc_status", "grpcio-status"),
                            ("google.rpc", "googleapis-common-protos")):
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            return (f"the Spark Connect client needs {package} (pip install "
                    "'pyspark[connect]'; it is in the dev extra)")
    home = _spark_home()
    if home is None or not list((home / "jars").glob("spark-connect_*.jar")):
        return "this pyspark ships no spark-connect jar (pyspark 4 does) to start a server"
    return None


@dataclass
class Server:
    process: subprocess.Popen
    port: int
    folder: Path

    @property
    def url(self) -> str:
        return f"sc://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 20) -> str:
        log = self.folder / "server.log"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) \
            if log.exists() else ""

    def stop(self) -> None:
        """End the server's process group (SIGTERM, then SIGKILL after 30 s) and remove its
        folder."""
        import shutil

        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
            except ProcessLookupError:  # already gone
                pass
        shutil.rmtree(self.folder, ignore_errors=True)


def start_server(conf: dict[str, str]) -> Server:
    """Start a local-mode Spark Connect server with ``conf``; returns once it listens."""
    from engines.conftest import java_home

    home = _spark_home()
    assert home is not None
    folder = Path(tempfile.mkdtemp(prefix="cx-spark-connect-"))
    port = free_port()
    settings = {**conf, "spark.connect.grpc.binding.address": "127.0.0.1",
                "spark.connect.grpc.binding.port": str(port),
                "spark.sql.warehouse.dir": str(folder / "warehouse")}
    args = [str(home / "bin" / "spark-submit"), "--class", CLASS, "--master", "local[2]",
            "--name", "cxanalysis-tests-connect"]
    for key, value in settings.items():
        args += ["--conf", f"{key}={value}"]
    args.append("spark-internal")
    env = dict(os.environ, SPARK_HOME=str(home))
    if java_home():
        env["JAVA_HOME"] = java_home()
    with (folder / "server.log").open("wb") as log:  # the server keeps its own copy
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env,
                                   cwd=folder, start_new_session=True)
    server = Server(process, port, folder)
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the Spark Connect server exited ({process.returncode}):\n"
                                   + server.log_tail())
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return server
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the Spark Connect server did not listen within "
                                       f"{START_TIMEOUT_S} s:\n" + server.log_tail()) from None
                time.sleep(0.5)
    except BaseException:
        server.stop()
        raise
