"""Model lifecycle, context policy, shutdown, systemd notification and security of the
daemon, each against a real `edge-agent serve` process."""
from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import time
from pathlib import Path

import pytest
import zmq
import zmq.auth

from edge_agent.client import AsyncClient, Client, EdgeAgentError
from edge_agent.manifest import describe_files, read_manifest, write_manifest

from .daemon_util import Daemon
from .test_daemon import base_sections, final_event, until_delta, user, wait_for


@pytest.fixture
def daemons():
    started: list[Daemon] = []
    yield started
    for d in started:
        d.stop()


def start(daemons, tmp_path, sections, name="d", **kwargs) -> Daemon:
    d = Daemon(tmp_path / name, sections, **kwargs)
    daemons.append(d)
    return d


def models_dir_with(tmp_path, **packages: Path) -> Path:
    folder = tmp_path / "models"
    folder.mkdir(exist_ok=True)
    for name, package in packages.items():
        (folder / name).symlink_to(package)
    return folder


def chat_error(client: Client, **fields) -> EdgeAgentError:
    with pytest.raises(EdgeAgentError) as err:
        client.call("chat", **fields)
    return err.value


# ---------------------------------------------------------------- model lifecycle


def test_lazy_load_idle_unload_and_reload(daemons, tmp_path, int4_package):
    d = start(daemons, tmp_path, base_sections(int4_package, models={"keep_alive_s": 3.0}))
    with d.client() as c:
        assert c.status()["engines"]["chat"]["state"] == "unloaded"  # nothing loaded before use
        events = list(c.chat_events("hi", max_tokens=3))
        assert any(e["event"] == "progress" and e["stage"] == "loading_model" for e in events)
        assert c.status()["engines"]["chat"]["state"] == "ready"
        wait_for(lambda: c.status()["engines"]["chat"]["state"] == "unloaded", timeout=20)
        time.sleep(1.0)  # an unload is not a crash: the engine must stay down
        engine = c.status()["engines"]["chat"]
        assert engine["state"] == "unloaded" and engine["pid"] is None and engine["restarts"] == 0
        assert c.call("chat", messages=user("again"), max_tokens=3)["usage"]["generated_tokens"] > 0


def test_preload(daemons, tmp_path, int4_package):
    d = start(daemons, tmp_path, base_sections(int4_package, models={"preload": True}))
    with d.client() as c:
        wait_for(lambda: c.status()["engines"]["chat"]["state"] == "ready", timeout=20)
        assert c.describe()["services"]["chat"]["json_schema"] is True  # known once loaded


def test_memory_budget_refuses_a_model_that_does_not_fit(daemons, tmp_path, int4_package):
    d = start(daemons, tmp_path, base_sections(int4_package, models={"memory_budget_mb": 16}))
    with d.client() as c:
        err = chat_error(c, messages=user("hi"))
        assert err.code == "model_unavailable" and "memory budget of 16 MiB" in err.message
        assert err.details["needed_mb"] > 16
        assert c.status()["engines"]["chat"]["state"] == "unloaded"


def test_missing_model(daemons, tmp_path, int4_package):
    d = start(daemons, tmp_path, base_sections(int4_package, models={"chat": "not-installed"}))
    with d.client() as c:
        err = chat_error(c, messages=user("hi"))
        assert err.code == "model_unavailable" and "'not-installed' not found" in err.message
        assert c.ping() and c.describe()["services"]["chat"]["available"] is False


def test_no_model_installed(daemons, tmp_path, int4_package):
    empty = tmp_path / "empty-models"
    empty.mkdir()
    d = start(daemons, tmp_path, base_sections(int4_package, models={"dir": str(empty), "chat": ""}))
    with d.client() as c:
        err = chat_error(c, messages=user("hi"))
        assert err.code == "model_unavailable" and "no chat model installed" in err.message


def test_truncated_package(daemons, tmp_path, int4_package):
    broken = Path(shutil.copytree(int4_package, tmp_path / "broken"))
    os.truncate(broken / "model.onnx.data", 1000)
    d = start(daemons, tmp_path, base_sections(int4_package, models={"chat": str(broken)}))
    with d.client() as c:
        err = chat_error(c, messages=user("hi"))
        assert err.code == "model_unavailable" and "damaged" in err.message and "model.onnx.data" in err.message
        assert c.status()["engines"]["chat"]["state"] == "unloaded"


def test_package_the_runtime_cannot_load(daemons, tmp_path, int4_package):
    garbage = Path(shutil.copytree(int4_package, tmp_path / "garbage"))
    size = (garbage / "model.onnx").stat().st_size
    (garbage / "model.onnx").write_bytes(b"\x07" * size)
    manifest = read_manifest(garbage)  # a consistent manifest (sizes, sha256): only loading can tell
    manifest.files = describe_files(garbage)
    write_manifest(garbage, manifest)
    d = start(daemons, tmp_path, base_sections(int4_package, models={"chat": str(garbage)}))
    with d.client() as c:
        err = chat_error(c, messages=user("hi"))
        assert err.code == "model_unavailable" and "failed to load" in err.message
        status = c.status()["engines"]["chat"]
        assert status["state"] == "failed" and status["last_error"]
        assert c.ping()
        again = chat_error(c, messages=user("hi"))  # tried again, fails the same clear way
        assert again.code == "model_unavailable"


def test_models_list_load_unload(daemons, tmp_path, int4_package, fp32_package):
    folder = models_dir_with(tmp_path, **{"tiny-int4": int4_package, "tiny-fp32": fp32_package})
    (folder / "not-a-package").mkdir()
    (folder / "half-copied").mkdir()
    (folder / "half-copied" / "edge-agent.json").write_text("{")
    d = start(daemons, tmp_path, base_sections(int4_package, models={"dir": str(folder), "chat": "tiny-int4"}))
    with d.admin_client() as c:
        listed = {m["name"]: m for m in c.models()["models"]}
        assert set(listed) == {"tiny-int4", "tiny-fp32", "half-copied"}
        assert listed["tiny-fp32"]["precision"] == "fp32" and listed["tiny-int4"]["serves"] == ["chat"]
        assert listed["half-copied"]["problem"] and not listed["half-copied"]["serves"]
        assert c.models("load", "tiny-fp32")["state"] == "ready"
        assert c.status()["engines"]["chat"]["model"] == "tiny-fp32"
        assert {m["name"]: m["loaded"] for m in c.models()["models"]}["tiny-fp32"] is True
        assert c.call("chat", messages=user("hi"), max_tokens=2)["usage"]["generated_tokens"] > 0
        assert c.models("unload", "tiny-fp32")["state"] == "unloaded"
        with pytest.raises(EdgeAgentError) as err:
            c.models("load", "nope")
        assert err.value.code == "not_found"
        with pytest.raises(EdgeAgentError) as err:
            c.models("load", "half-copied")
        assert err.value.code == "model_unavailable"


# ---------------------------------------------------------------- context policy


def test_context_policy(daemons, tmp_path, small_context_package):
    d = start(daemons, tmp_path, base_sections(small_context_package))
    with d.client() as c:
        err = chat_error(c, messages=user("word " * 300), max_tokens=8)
        assert err.code == "context_exceeded" and err.details["context_length"] == 256
        sid = c.sessions("create", system="Be brief.")["session"]
        results = []
        for turn in range(6):
            try:
                results.append(c.call("chat", session=sid, message=f"turn {turn} " + "tell me more " * 8,
                                      max_tokens=30))
            except EdgeAgentError as exc:
                assert exc.code == "context_exceeded"
                break
        else:
            pytest.fail("the session never reached the 256-token context")
        assert all(r["dropped_turns"] == 0 for r in results)  # the default policy never drops silently
        dropped = c.call("chat", session=sid, message="and now?", max_tokens=30, context_policy="drop_oldest")
        assert dropped["dropped_turns"] >= 1 and dropped["prompt_cache"] == "new"
        assert dropped["usage"]["prompt_tokens"] + 30 <= 256
        turns = c.sessions("list")["sessions"][0]["turns"]
        assert turns == len(results) - dropped["dropped_turns"] + 1


# ---------------------------------------------------------------- shutdown and systemd


def test_sigterm_during_generation(daemons, tmp_path, int4_package):
    d = start(daemons, tmp_path, base_sections(int4_package))
    with d.client() as c:
        list(c.chat("warm", max_tokens=2))
        engine_pid = c.status()["engines"]["chat"]["pid"]
        rid = c.send("chat", messages=user("keep going"), max_tokens=3000)
        until_delta(c, rid)
        d.process.send_signal(signal.SIGTERM)
        event = final_event(c, rid)
        assert event["event"] == "error" and event["error"]["code"] == "cancelled"
        assert event["error"]["reason"] == "shutdown"
    assert d.process.wait(15) == 0
    with pytest.raises(ProcessLookupError):
        os.kill(engine_pid, 0)
    assert "restarting" not in d.log()  # stopping the engine at shutdown is not a crash
    assert not Path(d.address[len("ipc://"):]).exists()


def test_systemd_notify_ready_watchdog_stopping(daemons, tmp_path, int4_package):
    path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(path))
    listener.settimeout(10)
    d = start(daemons, tmp_path, base_sections(int4_package), wait=False,
              env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"})
    messages = [listener.recv(4096).decode() for _ in range(3)]
    assert messages[0].startswith("READY=1\nSTATUS=serving on ipc://")
    assert any(m.startswith("WATCHDOG=1") for m in messages[1:])
    d.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if listener.recv(4096).decode().startswith("STOPPING=1"):
            break
    else:
        pytest.fail("no STOPPING=1")
    assert d.process.wait(10) == 0
    listener.close()


def test_unit_files_pass_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    unit = (repo / "systemd" / "edge-agent.service").read_text()
    # verify checks that ExecStart exists: point it at this interpreter
    (tmp_path / "edge-agent.service").write_text(unit.replace("/opt/edge-agent/.venv/bin/edge-agent", sys.executable))
    result = subprocess.run([analyze, "verify", str(tmp_path / "edge-agent.service")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    score = subprocess.run([analyze, "security", "--offline=true", str(tmp_path / "edge-agent.service")],
                           capture_output=True, text=True)
    assert "Overall exposure level" in score.stdout
    exposure = float(score.stdout.split("Overall exposure level for edge-agent.service:")[1].split()[0])
    assert exposure <= 2.5, score.stdout[-500:]


# ---------------------------------------------------------------- security


def test_tcp_beyond_loopback_needs_curve(tmp_path, int4_package):
    import subprocess
    import sys

    from .daemon_util import REPO, write_config

    config = write_config(tmp_path / "c.toml", base_sections(int4_package, server={"endpoints": ["tcp://0.0.0.0:5599"]}))
    result = subprocess.run([sys.executable, "-m", "edge_agent.cli", "serve", "--config", str(config)],
                            capture_output=True, text=True, cwd=REPO, timeout=30)
    assert result.returncode == 2
    assert "reachable from other machines" in result.stderr and "CURVE" in result.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def curve_daemon(daemons, tmp_path, int4_package):
    """A daemon with an IPC socket and a CURVE TCP endpoint that allows `client` and `admin`
    (admin also in admin_keys); `stranger` has a certificate that is not allowed. Returns the
    daemon, a factory of clients by certificate name (None: no CURVE), and the allowed folder."""
    keys = tmp_path / "keys"
    allowed = tmp_path / "allowed"
    keys.mkdir()
    allowed.mkdir()
    zmq.auth.create_certificates(keys, "server")
    for name in ("client", "admin", "stranger"):
        zmq.auth.create_certificates(keys, name)
    for name in ("client", "admin"):
        shutil.copy(keys / f"{name}.key", allowed / f"{name}.key")
    admin_public, _ = zmq.auth.load_certificate(keys / "admin.key")
    server_public, _ = zmq.auth.load_certificate(keys / "server.key")
    tcp = f"tcp://127.0.0.1:{free_port()}"
    sections = base_sections(int4_package, server={"endpoints": [f"ipc://{tmp_path}/d/agent.sock", tcp]})
    sections["server.curve"] = {"server_secret_file": str(keys / "server.key_secret"),
                                "authorized_clients_dir": str(allowed), "admin_keys": [admin_public.decode()]}
    d = start(daemons, tmp_path, sections)

    def curve_client(name: str | None, timeout: float = 10.0) -> Client:
        if name is None:
            return Client(tcp, timeout=timeout)
        return Client(tcp, timeout=timeout, curve_server_key=server_public,
                      curve_client_cert=str(keys / f"{name}.key_secret"))

    return d, curve_client, allowed


def test_curve_allow_list_and_admin_keys(daemons, tmp_path, int4_package):
    d, curve_client, _ = curve_daemon(daemons, tmp_path, int4_package)
    with curve_client("client") as ok:
        assert ok.ping()
        with pytest.raises(EdgeAgentError) as err:
            ok.models("load", "x")
        assert err.value.code == "unauthorized"
    with curve_client("admin") as admin:
        with pytest.raises(EdgeAgentError) as err:
            admin.models("load", "no-such-package")
        assert err.value.code == "not_found"  # authorized: it got as far as looking for the package
    with curve_client("stranger", timeout=2.0) as stranger:
        with pytest.raises(TimeoutError):
            stranger.ping(timeout=2.0)
    with curve_client(None, timeout=2.0) as plain:
        with pytest.raises(TimeoutError):
            plain.ping(timeout=2.0)
    with d.client() as local:  # the IPC socket next to it needs no keys
        assert local.ping()


def test_a_removed_client_certificate_is_refused_without_a_restart(daemons, tmp_path, int4_package):
    d, curve_client, allowed = curve_daemon(daemons, tmp_path, int4_package)
    with curve_client("client") as connected:
        assert connected.ping()
        (allowed / "client.key").unlink()  # the admin revokes the client
        time.sleep(2.5)  # the daemon looks at the folder every second (SIGHUP: at once)
        with pytest.raises(EdgeAgentError) as err:  # the connection that is open is refused from now on
            connected.status()
        assert err.value.code == "unauthorized"
    with curve_client("client", timeout=2.0) as again:  # and a new handshake fails
        with pytest.raises(TimeoutError):
            again.ping(timeout=2.0)
    with curve_client("admin") as other:  # others are not affected
        assert other.ping()


# ---------------------------------------------------------------- clients


def test_client_reconnects_to_a_restarted_daemon(daemons, tmp_path, int4_package):
    d = start(daemons, tmp_path, base_sections(int4_package))
    client = d.client(timeout=10)
    assert client.ping()
    d.stop()
    daemons.clear()
    with pytest.raises(TimeoutError):
        client.ping(timeout=1.0)
    start(daemons, tmp_path, base_sections(int4_package))  # same folder, same socket path
    assert client.ping(timeout=10)
    client.close()


def test_async_client_concurrent_chats_and_cancel(daemon_for_async):
    async def main():
        async with AsyncClient(daemon_for_async.address, timeout=30) as client:
            assert await client.ping()

            async def ask(n):
                events = [e async for e in client.chat_events(f"question {n}", max_tokens=12)]
                return events[-1]

            results = await asyncio.gather(*(ask(n) for n in range(3)))
            assert all(r["event"] == "result" and r["usage"]["generated_tokens"] > 0 for r in results)

            async def long_answer():
                return [e async for e in client.events("chat", rid="to-cancel", messages=user("long"),
                                                       max_tokens=3000)]

            task = asyncio.ensure_future(long_answer())
            await asyncio.sleep(0.3)
            ack = await client.cancel("to-cancel")
            events = await task
            assert ack["cancelled"] is True or events[-1]["event"] == "result"
            if ack["cancelled"]:
                assert events[-1]["error"]["code"] == "cancelled"

    asyncio.run(main())


@pytest.fixture
def daemon_for_async(daemons, tmp_path, int4_package):
    return start(daemons, tmp_path, base_sections(int4_package))


def test_unloading_the_model_ends_requests_in_flight(daemons, tmp_path, int4_package):
    d = start(daemons, tmp_path, base_sections(int4_package))
    with d.client() as c:
        rid = c.send("chat", messages=user("long"), max_tokens=3000)
        until_delta(c, rid)
        with d.admin_client() as admin:
            assert admin.models("unload", int4_package.name)["state"] == "unloaded"
        event = final_event(c, rid)
        assert event["error"]["code"] == "cancelled" and event["error"]["reason"] == "unload"
        assert c.call("chat", messages=user("loads again"), max_tokens=2)["usage"]["generated_tokens"] > 0
