"""Fixtures: a real redis-server on a free loopback port, started for the tests and stopped after."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Iterator, List

import pytest
import redis

REPO = Path(__file__).resolve().parents[3]


def free_port() -> int:
    """A loopback port free now, below the range the kernel takes clients' own ports from, so
    that no client connection takes it while a server is stopped to be restarted on it."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            clients_from = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        clients_from = 32768
    for _ in range(1000 if clients_from > 11000 else 0):
        port = random.randrange(10000, clients_from)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_servers(count: int, *extra: str) -> List["Server"]:
    """``count`` servers; if one fails to start, those already started are stopped."""
    started: List[Server] = []
    try:
        for _ in range(count):
            started.append(Server(*extra))
    except BaseException:
        for s in started:
            s.close()
        raise
    return started


class Server:
    """A redis-server process owned by a test; ``kill()`` and ``restart()`` for fault tests."""

    def __init__(self, *extra: str) -> None:
        if shutil.which("redis-server") is None:
            pytest.fail("redis-server is not installed (bash .ci/run installs it)")
        self.proc: subprocess.Popen | None = None
        # A port found free can be taken before the server binds it (by another server): the
        # server then exits at once and starts again on another.
        for attempt in range(3):
            self.port = free_port()
            self.dir = tempfile.mkdtemp(prefix="pottery-semaphore-py-", dir=_short_temp_dir())
            other = str(free_port()) if any("{free_port}" in a for a in extra) else ""
            self.extra = [a.replace("{port}", str(self.port)).replace("{free_port}", other) for a in extra]
            if self.start():
                return
            shutil.rmtree(self.dir, ignore_errors=True)
        raise RuntimeError(f"redis-server exited at start on three ports in a row (last {self.port})")

    def start(self) -> bool:
        """Starts the server; False when it exited at once (a port of its was taken). Ready means
        our own process bound the port, and answers: redis-server creates its unix socket, in a
        directory of its own, only once it has bound its TCP port (so a foreign server on that
        port cannot pass), and answers only once it started all (a cluster bus port included)."""
        ready = Path(self.dir) / "ready.sock"
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir, "--unixsocket", str(ready), *self.extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while self.proc.poll() is None:
            if ready.exists() and self._answers():
                return True
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.01)
        self.proc = None
        return False

    def _answers(self) -> bool:
        """Whether the server answers a PING (any answer: NOAUTH too)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return bool(s.recv(64))
        except OSError:
            return False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def client(self, **kwargs: object) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, **kwargs)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


#: The default lease (s): semaphores created with defaults on a server younger than this (plus
#: a second: the server's start is known to the second) wait out the fresh-server guard.
DEFAULT_LEASE = 10.0


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    """One server for the session, aged past the fresh-server guard so that the original API,
    used verbatim with its defaults, grants at once (a server that just restarted would not)."""
    s = Server()
    started = int(s.client().lastsave().timestamp())
    time.sleep(max(0.0, started + 1 + DEFAULT_LEASE + 0.5 - time.time()))
    yield s
    s.close()


@pytest.fixture
def own_server() -> Iterator[Server]:
    """A server of the test's own, for tests that kill or reconfigure it."""
    s = Server()
    yield s
    s.close()


@pytest.fixture
def redis_client(server: Server) -> redis.Redis:
    return server.client()


@pytest.fixture
def unique_key() -> str:
    return f"py-{uuid.uuid4().hex[:12]}"


def _short_temp_dir() -> str | None:
    """Where the servers' directories go: the temporary directory, or /tmp where that is too
    long for the unix socket inside (sun_path holds 107 bytes)."""
    return None if len(tempfile.gettempdir()) <= 60 else "/tmp"


def worker_binary() -> Path:
    """The Rust host's test worker (built by `cargo xtask test`), in cargo's target directory:
    ``$CARGO_TARGET_DIR`` (relative to the repository) where set, as xtask honours it."""
    target = REPO / os.environ.get("CARGO_TARGET_DIR", "target")
    for profile in ("debug", "release"):
        path = target / profile / "worker"
        if path.exists():
            return path
    pytest.fail(f"{target}/debug/worker is missing: run `cargo build -p pottery-semaphore-tests --bins`")


def python_worker(*args: str) -> List[str]:
    return [sys.executable, str(Path(__file__).with_name("_worker.py")), *args]

