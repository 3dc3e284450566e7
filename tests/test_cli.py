"""`edge-agent` as a user types it, against a real daemon."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from .daemon_util import REPO, Daemon, write_config
from .test_daemon import base_sections


@pytest.fixture(scope="module")
def cli_daemon(int4_package, tmp_path_factory):
    d = Daemon(tmp_path_factory.mktemp("cli-daemon"), base_sections(int4_package))
    yield d
    d.stop()


def edge_agent(*args: str, stdin: str | None = None, env: dict | None = None, timeout: float = 60):
    return subprocess.run([sys.executable, "-m", "edge_agent.cli", *args], input=stdin, capture_output=True,
                          text=True, cwd=REPO, timeout=timeout, env={**os.environ, **(env or {})})


def test_chat_streams_to_stdout(cli_daemon):
    result = edge_agent("chat", "--connect", cli_daemon.address, "--max-tokens", "8", "Hello there")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert "8 tokens" in result.stderr and "tok/s" in result.stderr and "TTFT" in result.stderr


def test_chat_json_events_and_address_from_environment(cli_daemon):
    result = edge_agent("chat", "--json", "--max-tokens", "5", "--system", "Be brief", "Hi",
                        env={"EDGE_AGENT_ADDRESS": cli_daemon.address})
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events[0]["event"] == "accepted" and events[-1]["event"] == "result"
    assert events[-1]["usage"]["generated_tokens"] == 5
    assert "".join(e.get("text", "") for e in events if e["event"] == "delta") == events[-1]["text"]


def test_interactive_chat_keeps_a_session(cli_daemon):
    result = edge_agent("chat", "--connect", cli_daemon.address, "--max-tokens", "4", "--json",
                        stdin="first line\n\nsecond line\n")
    assert result.returncode == 0, result.stderr
    finals = [json.loads(line) for line in result.stdout.splitlines() if '"final":true' in line.replace(" ", "")]
    assert len(finals) == 2 and finals[1]["session"] == finals[0]["session"]
    assert finals[1]["usage"]["prompt_tokens"] > finals[0]["usage"]["prompt_tokens"]
    assert "session" in result.stderr
    listed = json.loads(edge_agent("sessions", "--connect", cli_daemon.address).stdout)
    assert finals[0]["session"] not in [s["session"] for s in listed["sessions"]]  # cleaned up


def test_status_describe_models(cli_daemon):
    status = edge_agent("status", "--connect", cli_daemon.address)
    assert status.returncode == 0 and json.loads(status.stdout)["uptime_s"] >= 0
    describe = json.loads(edge_agent("describe", "--connect", cli_daemon.address).stdout)
    assert describe["protocol"]["version"] == 1
    models = json.loads(edge_agent("models", "--connect", cli_daemon.address).stdout)
    assert any(m["name"] == "phi35-mini-tiny-int4" for m in models["models"])
    missing_name = edge_agent("models", "load", "--connect", cli_daemon.address)
    assert missing_name.returncode == 2 and "needs a package name" in missing_name.stderr


def test_error_from_the_daemon_exits_1(cli_daemon):
    result = edge_agent("chat", "--connect", cli_daemon.address, "--session", "nope", "hi")
    assert result.returncode == 1 and "not_found" in result.stderr and "Traceback" not in result.stderr


def test_unreachable_daemon_exits_3(tmp_path):
    started = time.monotonic()
    result = edge_agent("status", "--connect", f"ipc://{tmp_path}/none.sock", "--timeout", "1")
    assert result.returncode == 3 and "is the daemon running" in result.stderr
    assert time.monotonic() - started < 20


def test_bad_config_exits_2(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\nmax_queue = 'many'\n")
    result = edge_agent("serve", "--config", str(bad))
    assert result.returncode == 2 and "server.max_queue must be an integer" in result.stderr
    result = edge_agent("serve", "--config", str(tmp_path / "missing.toml"))
    assert result.returncode == 2 and "does not exist" in result.stderr


def test_help_lists_every_command():
    result = edge_agent("--help")
    for command in ("serve", "chat", "ask", "ocr", "guide", "capture", "status", "describe", "models", "sessions",
                    "check"):
        assert command in result.stdout
    chat_help = edge_agent("chat", "--help").stdout
    for option in ("--session", "--system", "--json", "--connect", "--max-tokens", "--stop"):
        assert option in chat_help


def test_serve_refuses_a_second_daemon_on_a_live_socket(cli_daemon, int4_package, tmp_path):
    config = write_config(tmp_path / "second.toml",
                          base_sections(int4_package, server={"endpoints": [cli_daemon.address]}))
    result = edge_agent("serve", "--config", str(config), timeout=30)
    assert result.returncode == 2 and "already serving" in result.stderr and "cannot start" in result.stderr
    assert json.loads(edge_agent("status", "--connect", cli_daemon.address).stdout)["pid"] == cli_daemon.process.pid
