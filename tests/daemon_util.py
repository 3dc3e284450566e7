"""Starting real daemon processes for tests: a TOML config, `edge-agent serve` in a
subprocess, a ready check over the real socket, and a clean SIGTERM stop."""
from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import zmq

from edge_agent.client import Client
from edge_agent.config import admin_endpoint

REPO = Path(__file__).resolve().parents[1]


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return repr(value)


def non_reader(address: str, receive_timeout_ms: int) -> zmq.Socket:
    """A client that stops reading: the smallest queues ZeroMQ and the kernel allow on its side."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, 1)
    sock.setsockopt(zmq.RCVBUF, 4096)
    sock.setsockopt(zmq.RCVTIMEO, receive_timeout_ms)
    sock.connect(address)
    return sock


def write_config(path: Path, sections: dict[str, dict]) -> Path:
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in values.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    return path


class Daemon:
    def __init__(self, workdir: Path, sections: dict[str, dict], *, wait: bool = True,
                 env: dict[str, str] | None = None, fd_limit: int | None = None):
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.address = f"ipc://{workdir}/agent.sock"
        sections = {k: dict(v) for k, v in sections.items()}
        sections.setdefault("server", {}).setdefault("endpoints", [self.address])
        self.config = write_config(workdir / "edge-agent.toml", sections)
        self.log_path = workdir / "daemon.log"
        self._log = self.log_path.open("wb")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        def limit_fds() -> None:  # as a unit's LimitNOFILE would
            if fd_limit:
                resource.setrlimit(resource.RLIMIT_NOFILE, (fd_limit, fd_limit))

        self.process = subprocess.Popen([sys.executable, "-m", "edge_agent.cli", "serve", "--config", str(self.config)],
                                        cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                        preexec_fn=limit_fds if fd_limit else None)
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        with Client(self.address, timeout=0.5) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"daemon exited with {self.process.returncode}:\n{self.log()}")
                try:
                    if client.ping(timeout=0.5):
                        return
                except (TimeoutError, zmq.ZMQError):
                    pass
        raise RuntimeError(f"daemon not ready after {timeout} s:\n{self.log()}")

    def client(self, timeout: float = 60.0) -> Client:
        return Client(self.address, timeout=timeout)

    @property
    def admin_address(self) -> str:
        return admin_endpoint(self.address) or self.address

    def admin_client(self, timeout: float = 60.0) -> Client:
        """A client on the admin socket (this test's user is the daemon's: an admin by default)."""
        return Client(self.admin_address, timeout=timeout)

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 20.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode
