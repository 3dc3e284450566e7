"""Regression tests for the hardening review (#11): each reproduces what a hostile local user or a
buggy app did to the daemon, and fails on the code before the fix."""
from __future__ import annotations

import io
import json
import os
import signal
import time
from pathlib import Path

import pytest
import zmq

from edge_agent import protocol as P
from edge_agent.client import Client, EdgeAgentError
from edge_agent.config import UnsafeSocketPath
from edge_agent.manifest import describe_files, read_manifest, write_manifest

from .daemon_util import Daemon, non_reader
from .test_daemon import base_sections, raw_reply, raw_socket, user, wait_for


@pytest.fixture(scope="module")
def daemon(int4_package, tmp_path_factory):
    sections = base_sections(int4_package, server={"client_idle_s": 1.0})
    d = Daemon(tmp_path_factory.mktemp("hardening"), sections)
    yield d
    d.stop()


def reply(daemon, *frames: bytes) -> dict:
    sock = raw_socket(daemon)
    try:
        sock.send_multipart(list(frames))
        return json.loads(sock.recv_multipart()[0])
    finally:
        sock.close()


def header(**fields) -> bytes:
    return json.dumps({"v": 1, "id": "h1", **fields}).encode()


# ---------------------------------------------------------------- the parser answers everything


def test_deeply_nested_json_is_answered_not_dropped(daemon):
    nested = b'{"v": 1, "id": "deep", "op": "ping", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    answer = reply(daemon, nested)
    assert answer["event"] == "error" and answer["error"]["code"] == "bad_request" and answer["id"] is None


@pytest.mark.parametrize("frame", [
    b'{"v": 1, "id": "\\ud800", "op": "ping"}',  # lone surrogate in the id
    b'{"v": 1, "id": "s1", "op": "ping", "\\udfff": 1}',  # ... in a field name
    b'{"v": 1, "id": "s2", "op": "chat", "messages": [{"role": "user", "content": "a\\ud83d"}]}',
    b'{"v": 1, "id": "s3", "op": "say", "text": "hello \\ud800"}',
])
def test_lone_surrogates_are_bad_requests(daemon, frame):
    answer = reply(daemon, frame)
    assert answer["event"] == "error" and answer["error"]["code"] == "bad_request", answer
    assert answer["id"] in (None, "s1", "s2", "s3")


def test_a_session_id_with_a_lone_surrogate_cannot_break_sessions_list(daemon):
    answer = reply(daemon, b'{"v": 1, "id": "c1", "op": "sessions", "action": "create", "session": "\\ud83d"}')
    assert answer["error"]["code"] == "bad_request"
    with daemon.client() as other:
        assert isinstance(other.sessions("list")["sessions"], list)


@pytest.mark.parametrize("version", [True, 1.0, "1"])
def test_only_the_integer_version_is_accepted(daemon, version):
    answer = reply(daemon, json.dumps({"v": version, "id": "v1", "op": "ping"}).encode())
    assert answer["error"]["code"] == "unsupported" and answer["id"] == "v1"


def test_huge_integers_are_bad_requests_not_internal_errors(daemon):
    answer = reply(daemon, header(op="chat", messages=user("hi"), top_k=2**62))
    assert answer["error"]["code"] == "bad_request" and answer["error"]["field"] == "top_k"


def test_frames_after_the_header_of_an_op_that_takes_none(daemon):
    answer = reply(daemon, header(op="ping"), b"unexpected")
    assert answer["error"]["code"] == "bad_request" and answer["id"] == "h1"


def test_an_oversized_header_is_refused_with_its_id(daemon):
    big = json.dumps({"v": 1, "id": "big-header", "op": "ping", "pad": "x" * (P.MAX_HEADER_BYTES + 10)}).encode()
    answer = reply(daemon, big)
    assert answer["error"]["code"] == "too_large" and answer["id"] == "big-header"


def test_ask_on_an_unknown_session_is_not_found(daemon):
    answer = reply(daemon, header(op="ask", question="And now?", session="v-1"))
    assert answer["error"]["code"] == "not_found" and answer["error"]["field"] == "session"


# ---------------------------------------------------------------- the log


def test_client_text_cannot_forge_log_lines_or_flood_the_log(daemon):
    before = len(daemon.log())
    forged = header(op="ping", **{"x\nERROR edge_agent.server: FORGED": 1})
    assert reply(daemon, forged)["error"]["code"] == "bad_request"
    sock = raw_socket(daemon)
    try:
        for _ in range(50):  # a megabyte of garbage, fifty times, as fast as the socket takes it
            sock.send(b"{" + b"A" * (1 << 20))
        for _ in range(50):
            sock.recv_multipart()
    finally:
        sock.close()
    grown = daemon.log()[before:]
    assert not any(line.startswith("ERROR edge_agent.server: FORGED") for line in grown.splitlines())
    assert len(grown) < 64 << 10, f"the log grew by {len(grown)} bytes"


# ---------------------------------------------------------------- what clients leave behind


def test_the_client_table_forgets_clients_that_left(daemon):
    for _ in range(300):  # connect, ping, close
        with daemon.client(timeout=10) as c:
            assert c.ping()
    with daemon.client() as observer:
        assert observer.status()["clients"] >= 100
        wait_for(lambda: observer.status()["clients"] <= 2, timeout=10)


def test_engines_die_with_a_killed_daemon(int4_package, tmp_path):
    d = Daemon(tmp_path / "d", base_sections(int4_package))
    try:
        with d.client() as c:
            assert "".join(c.chat("hello", max_tokens=2)) is not None
            wait_for(lambda: c.status()["engines"]["speech"]["state"] == "ready", timeout=30)
            engines = [e["pid"] for e in c.status()["engines"].values() if e.get("pid")]
        assert len(engines) >= 2
        d.process.send_signal(signal.SIGKILL)
        d.process.wait()

        def all_gone() -> bool:
            for pid in engines:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    continue
                return False
            return True

        wait_for(all_gone, timeout=5)
    finally:
        d.stop()


def test_status_is_answered_while_garbage_arrives(daemon):
    """Garbage from one socket is answered one by one and does not stop others being served."""
    sock = raw_socket(daemon)
    try:
        for n in range(200):
            sock.send(b'{"v": 1, "id": "g%d", "op": "nope"}' % n)
        with daemon.client() as c:
            start = time.monotonic()
            assert c.ping()
            assert time.monotonic() - start < 2
        for _ in range(200):
            assert json.loads(sock.recv_multipart()[0])["error"]["code"] == "bad_request"
    finally:
        sock.setsockopt(zmq.LINGER, 0)
        sock.close()


# ---------------------------------------------------------------- who is an admin, what may load


def test_ipc_clients_are_not_admins_the_admin_socket_is(daemon, int4_package):
    with daemon.client() as member:  # anyone who can open agent.sock (the socket's group)
        for call in (lambda: member.models("unload", int4_package.name),
                     lambda: member.speech("cancel", scope="all")):
            with pytest.raises(EdgeAgentError) as err:
                call()
            assert err.value.code == "unauthorized"
    with daemon.admin_client() as admin:  # this test runs as the daemon's user: on the admin list
        assert admin.speech("cancel", scope="all")["affected"] == 0
        assert admin.models()["models"]


def test_only_an_admin_wipes_every_clients_sessions(daemon):
    with daemon.client() as member:
        sid = member.sessions("create")["session"]
        with pytest.raises(EdgeAgentError) as err:
            member.sessions("reset", all_clients=True)
        assert err.value.code == "unauthorized" and err.value.details["field"] == "all"
        assert [s["session"] for s in member.sessions("list")["sessions"]] == [sid]
        for bad in ({"action": "list", "all": True}, {"action": "reset", "session": sid, "all": True},
                    {"action": "reset", "all": "yes"}):
            with pytest.raises(EdgeAgentError) as err:
                member.call("sessions", **bad)
            assert err.value.code == "bad_request" and err.value.details["field"] == "all"
        with daemon.admin_client() as admin:
            assert admin.sessions("reset", all_clients=True)["wiped"] >= 1
        assert member.sessions("list")["sessions"] == []


class Recorded:
    """The engine side of the channel, kept in a list: the chat engine runs in this process."""

    def __init__(self):
        self.sent: list[tuple] = []

    def event(self, job, kind, fields, attachments=()):
        self.sent.append(("event", job, kind))

    def result(self, job, fields, attachments=()):
        self.sent.append(("result", job, fields))

    def fail(self, job, error):
        self.sent.append(("fail", job, error))

    def heartbeat(self):
        pass


def test_a_wipe_makes_the_chat_engine_drop_the_turn_it_kept(int4_package):
    from edge_agent.engines.channel import EngineJob
    from edge_agent.engines.genai_chat import ChatWorker

    channel = Recorded()
    worker = ChatWorker(channel, {"package": str(int4_package), "threads": 1})
    worker.handle(EngineJob("j1", {"messages": user("My PIN is 1234."), "session": "kitchen", "max_tokens": 3}))
    worker.admit()
    while worker.jobs:
        worker.step_round()
    assert channel.sent[-1][0] == "result"
    kept = [b.resident for b in worker.batches if b.resident is not None]
    assert [r.session for r in kept] == ["kitchen"]  # kept for the next turn
    worker.handle({"type": "forget"})
    assert all(b.resident is None for b in worker.batches)


def test_the_privacy_wipe_follows_a_quiet_spell(int4_package, tmp_path):
    """[privacy] wipe_idle_s: once nobody has asked anything for that long, every session goes
    (a kiosk's next user does not find the last one's conversation); status polls do not count."""
    d = Daemon(tmp_path / "d", base_sections(int4_package, privacy={"wipe_idle_s": 2.0}))
    try:
        with d.client() as c:
            sid = c.sessions("create")["session"]
            c.call("chat", session=sid, message="My PIN is 1234.", max_tokens=2)
            for _ in range(6):  # a busy kiosk: something asked every half second keeps it
                time.sleep(0.5)
                c.sessions("list")
            assert [s["session"] for s in c.sessions("list")["sessions"]] == [sid]
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and c.status()["sessions"]:  # monitoring only
                time.sleep(0.2)
            assert c.status()["sessions"] == 0
            assert time.monotonic() < deadline
            with pytest.raises(EdgeAgentError) as err:
                c.call("chat", session=sid, message="What is my PIN?")
            assert err.value.code == "not_found"
        assert "privacy: 1 session(s) wiped" in d.log() and "1234" not in d.log()
    finally:
        d.stop()


@pytest.mark.parametrize("name", ["/etc", "../phi35-mini-tiny-int4", "~root", ".hidden"])
def test_models_load_takes_package_names_not_paths(daemon, name):
    with daemon.admin_client() as admin:
        with pytest.raises(EdgeAgentError) as err:
            admin.models("load", name)
        assert err.value.code == "bad_request" and err.value.details["field"] == "name"


def test_the_admin_socket_admits_only_the_listed_users(int4_package, tmp_path):
    d = Daemon(tmp_path / "d", base_sections(int4_package, server={"admin_users": ["54321"]}))
    try:
        with d.client() as member:
            assert member.ping()
        with d.admin_client() as stranger:  # the kernel reports our uid; 54321 is not us
            with pytest.raises(TimeoutError):
                stranger.ping(timeout=2)
    finally:
        d.stop()


def with_native_library(package: Path) -> Path:
    """A package (consistent manifest and all) whose genai_config asks onnxruntime to load a
    shared object: what an attacker copies into the models folder."""
    config_path = package / "genai_config.json"
    config = json.loads(config_path.read_text())
    config["model"]["decoder"]["session_options"]["custom_ops_library"] = str(package / "payload.so")
    config_path.write_text(json.dumps(config, indent=4))
    manifest = read_manifest(package)
    manifest.files = describe_files(package)
    write_manifest(package, manifest)
    return package


def test_a_package_that_loads_native_code_is_refused(package_copy, tmp_path):
    package = with_native_library(package_copy)
    for allow, expected in ((False, "refused unless models.allow_native_libraries"), (True, "failed to load")):
        d = Daemon(tmp_path / f"d-{allow}", base_sections(package, models={"allow_native_libraries": allow}))
        try:
            with d.client() as c:
                with pytest.raises(EdgeAgentError) as err:
                    list(c.chat("hello", max_tokens=2))
                assert err.value.code == "model_unavailable" and expected in err.value.message, err.value.message
                if not allow:
                    assert "custom_ops_library" in err.value.message
        finally:
            d.stop()


# ---------------------------------------------------------------- engine work a client leaves behind


def text_page(size=(1600, 1000)) -> bytes:
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.truetype("DejaVuSans.ttf", 28)
    for row in range(size[1] // 40):
        draw.text((20, 10 + row * 40), f"Line {row}: the quick brown fox jumps over the lazy dog " * 2, fill="black",
                  font=font)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def test_cancelled_ocr_requests_do_not_keep_the_engine_busy(daemon):
    page = text_page()
    with daemon.client(timeout=120) as attacker, daemon.client(timeout=120) as victim:
        start = time.monotonic()
        victim.ocr(page)  # loads the engine, and tells how long one page takes
        one_page = time.monotonic() - start
        start = time.monotonic()
        victim.ocr(page)
        one_page = min(one_page, time.monotonic() - start)
        for _ in range(20):  # queue a page and cancel it, twenty times: the slot frees at once
            rid = attacker.send("ocr", attachments=(page,))
            first = attacker.next_event(rid, 10)
            assert first["event"] == "accepted", first
            attacker.cancel(rid)
        start = time.monotonic()
        victim.ocr(page)
        waited = time.monotonic() - start
    # the attacker's one pass in progress may finish first; the other nineteen are dropped unrun
    assert waited < 3 * one_page + 1.0, f"one page {one_page:.2f} s, after the flood {waited:.2f} s"
    with daemon.client() as observer:
        wait_for(lambda: observer.status()["engines"]["ocr"]["active_requests"] == 0, timeout=10)


def test_a_request_sent_right_after_a_cancel_gets_the_freed_slot(daemon):
    page = text_page()
    with daemon.client(timeout=120) as c:
        limit = c.describe()["limits"]["max_inflight_per_client"]
        in_flight = [c.send("ocr", attachments=(page,)) for _ in range(limit)]
        for rid in in_flight:
            assert c.next_event(rid, 30)["event"] == "accepted"
        for _ in range(6):  # cancel a waiting page and, without waiting for the reply, send another
            c.send("cancel", target=in_flight.pop())
            rid = c.send("ocr", attachments=(page,))
            first = c.next_event(rid, 10)
            assert first["event"] == "accepted", first
            in_flight.append(rid)
        for rid in in_flight:
            c.cancel(rid)


def test_an_image_over_the_pixel_budget_is_refused_before_it_is_decoded(daemon):
    from PIL import Image

    out = io.BytesIO()
    Image.new("L", (6000, 4500), 255).save(out, "PNG")  # 27 MP in a few kilobytes
    with daemon.client() as c:
        assert c.describe()["services"]["ocr"]["max_image_pixels"] == 24_000_000
        with pytest.raises(EdgeAgentError) as err:
            c.ocr(out.getvalue())
        assert err.value.code == "too_large" and err.value.details["field"] == "image"


def test_a_package_re_exported_in_place_loads_with_its_new_manifest(tiny_snapshot, tmp_path):
    from export.text import TextExportOptions, export_text

    package = tmp_path / "models" / "tiny"
    export_text(tiny_snapshot, package, TextExportOptions(), progress=lambda _m: None)
    d = Daemon(tmp_path / "d", base_sections(package))
    try:
        with d.client() as c, d.admin_client() as admin:
            assert "".join(c.chat("hello", max_tokens=2)) is not None
            admin.models("unload", "tiny")
            export_text(tiny_snapshot, package, TextExportOptions(block_size=32, force=True), progress=lambda _m: None)
            assert c.call("chat", messages=user("hello again"), max_tokens=2)["usage"]["generated_tokens"] > 0
    finally:
        d.stop()


# ---------------------------------------------------------------- socket squatting


@pytest.mark.skipif(os.geteuid() != 0, reason="making a folder another user owns needs root (CI runs as root)")
def test_a_socket_folder_another_user_made_under_a_world_writable_one_is_refused(int4_package, tmp_path):
    shared = tmp_path / "tmp"  # stands for /tmp: world-writable and sticky
    shared.mkdir()
    shared.chmod(0o1777)
    squatted = shared / f"edge-agent-{os.getuid()}"
    squatted.mkdir(mode=0o755)
    os.chown(squatted, 65534, 65534)  # made first by someone else (nobody)
    address = f"ipc://{squatted}/agent.sock"
    with pytest.raises(UnsafeSocketPath):  # the client will not talk to whatever listens there
        Client(address)
    d = Daemon(tmp_path / "d", base_sections(int4_package, server={"endpoints": [address]}), wait=False)
    assert d.process.wait(30) != 0  # the daemon will not serve there either, and says why
    assert "another user may have made it" in d.log()
    d.stop()
    os.chown(squatted, os.getuid(), os.getgid())  # the user's own private folder: fine
    squatted.chmod(0o700)
    d = Daemon(tmp_path / "d2", base_sections(int4_package, server={"endpoints": [address]}), wait=False)
    d.address = address
    try:
        d.wait_ready()
        with Client(address) as c:
            assert c.ping()
    finally:
        d.stop()


# ---------------------------------------------------------------- sessions


def test_chat_sessions_belong_to_their_client(daemon):
    with daemon.client() as victim, daemon.client() as other:
        victim.sessions("create", session="diary", system="Private.")
        assert victim.call("chat", session="diary", message="my secret", max_tokens=2)["session"] == "diary"
        assert "diary" not in [s["session"] for s in other.sessions("list")["sessions"]]
        for attempt in (lambda: other.call("chat", session="diary", message="what did they say?", max_tokens=2),
                        lambda: other.sessions("delete", session="diary"),
                        lambda: other.sessions("reset", session="diary")):
            with pytest.raises(EdgeAgentError) as err:
                attempt()
            assert err.value.code == "not_found"
        other.sessions("create", session="diary")  # the same name is the other client's own session
        for n in range(64):  # flooding the store evicts only the flooder's own sessions
            other.sessions("create", session=f"junk-{n}")
        assert len(other.sessions("list")["sessions"]) == 16
        turns = victim.call("chat", session="diary", message="still here?", max_tokens=2)
        assert turns["usage"]["prompt_tokens"] > 0 and "diary" in [s["session"] for s in
                                                                    victim.sessions("list")["sessions"]]


def test_daemon_named_sessions_are_unguessable_capabilities(daemon):
    with daemon.client() as owner, daemon.client() as reconnected:
        sid = owner.sessions("create")["session"]
        assert sid.startswith("s-") and len(sid) > 20
        assert owner.call("chat", session=sid, message="hello", max_tokens=2)["session"] == sid
        # whoever holds the id may go on with it (a client that reconnected), but no one sees it listed
        assert reconnected.call("chat", session=sid, message="again", max_tokens=2)["session"] == sid
        assert sid not in [s["session"] for s in reconnected.sessions("list")["sessions"]]


def test_a_package_altered_without_changing_sizes_is_refused(package_copy, tmp_path):
    data = package_copy / "model.onnx.data"
    with open(data, "r+b") as f:  # 4 KiB flipped in the weights; sizes stay as the manifest says
        f.seek(1 << 20)
        block = f.read(4096)
        f.seek(1 << 20)
        f.write(bytes(b ^ 0xFF for b in block))
    d = Daemon(tmp_path / "d", base_sections(package_copy))
    try:
        with d.client() as c:
            with pytest.raises(EdgeAgentError) as err:
                list(c.chat("hello", max_tokens=2))
            assert err.value.code == "model_unavailable" and "model.onnx.data" in err.value.message
            assert "sha256" in err.value.message
    finally:
        d.stop()


def test_memory_comes_back_after_oversized_messages_are_refused(int4_package, tmp_path):
    d = Daemon(tmp_path / "d", base_sections(int4_package, server={"max_message_bytes": 32 << 20}))
    try:
        with d.client() as c:
            pid = c.status()["pid"]

        def rss() -> int:
            status = Path(f"/proc/{pid}/status").read_text()
            return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1]) << 10

        before = rss()
        sock = raw_socket(d)
        try:
            frame = b"x" * (16 << 20)  # each frame under the 32 MiB limit, twenty of them far over it
            for n in range(2):
                sock.send_multipart([header(op="ping", id=f"big{n}"), *[frame] * 20])
                answer = json.loads(sock.recv_multipart()[0])
                assert answer["error"]["code"] == "too_large" and answer["id"] == f"big{n}"
        finally:
            sock.close()
        time.sleep(0.5)
        grown = rss() - before
        assert grown < 32 << 20, f"daemon RSS still {grown >> 20} MiB above where it was"
        with d.client() as c:
            assert c.ping()
    finally:
        d.stop()


# ---------------------------------------------------------------- file descriptors


def test_a_connection_flood_cannot_exhaust_file_descriptors(int4_package, tmp_path):
    import socket

    from .test_daemon_lifecycle import free_port

    port = free_port()
    ipc = f"ipc://{tmp_path}/d/agent.sock"
    sections = base_sections(int4_package, server={"endpoints": [ipc, f"tcp://127.0.0.1:{port}"]})
    d = Daemon(tmp_path / "d", sections, fd_limit=512)
    flood: list[socket.socket] = []
    try:
        for _ in range(1100):  # plain TCP connections that never say a word: more than the daemon has fds
            s = socket.socket()
            s.settimeout(2)
            try:
                s.connect(("127.0.0.1", port))
            except OSError:
                s.close()  # refused: the daemon stopped listening on TCP, as it should
                continue
            flood.append(s)
        time.sleep(1)
        assert d.process.poll() is None, d.log()  # alive (it aborted at its fd limit before)
        with d.client(timeout=10) as local:  # the IPC socket was never touched
            assert local.ping(timeout=5)
            connections = local.status()["connections"]
            assert connections["connections"] <= connections["cap"] < 512
        assert d.process.poll() is None, d.log()
        assert f"tcp://127.0.0.1:{port}: " in d.log() and "not listening" in d.log()
        for s in flood:
            s.close()
        flood.clear()
        with Client(f"tcp://127.0.0.1:{port}", timeout=10) as remote:  # listening again after the cool-down
            assert remote.ping(timeout=10)
    finally:
        for s in flood:
            s.close()
        d.stop()


def test_a_busy_tcp_port_is_a_clear_error_that_leaves_nothing_behind(int4_package, tmp_path):
    import socket
    import tempfile

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    ipc = tmp_path / "d" / "agent.sock"
    engine_folders = set(Path(tempfile.gettempdir()).glob("edge-agent-*-*"))
    d = Daemon(tmp_path / "d", base_sections(int4_package, server={"endpoints": [f"ipc://{ipc}",
                                                                                 f"tcp://127.0.0.1:{port}"]}),
               wait=False)
    try:
        assert d.process.wait(30) == 2
        log = d.log()
        assert f"cannot listen on tcp://127.0.0.1:{port}" in log and "Traceback" not in log, log
        assert not ipc.exists() and not ipc.with_name("agent-admin.sock").exists()
        assert set(Path(tempfile.gettempdir()).glob("edge-agent-*-*")) <= engine_folders
    finally:
        d.stop()
        busy.close()


def test_no_request_content_reaches_the_log(daemon):
    secret = "Zebrafish-Umbrella-4711"
    with daemon.client() as c:
        sid = c.sessions("create", system=f"system {secret}")["session"]
        c.call("chat", session=sid, message=f"my PIN is {secret}", max_tokens=2)
        c.call("chat", messages=user(f"again {secret}"), max_tokens=2, stop=[secret])
        with pytest.raises(EdgeAgentError):
            c.call("chat", messages=user(secret), max_tokens=99999)
    assert secret not in daemon.log()


def test_status_has_the_same_engine_fields_before_the_first_load(daemon):
    with daemon.client() as c:
        vision = c.status()["engines"]["vision"]  # never loaded here: no vision package
        assert vision["state"] == "unloaded"
        list(c.chat("hello", max_tokens=2))
        chat = c.status()["engines"]["chat"]
    assert set(vision) == set(chat) - {"rss_bytes"}


# ---------------------------------------------------------------- clients that do not read


def events_until_final(sock: zmq.Socket, rids: set[str]) -> dict[str, list[dict]]:
    """Every event of these requests, until each has had its final one (and then a moment more)."""
    events: dict[str, list[dict]] = {rid: [] for rid in rids}
    open_ = set(rids)
    while open_:
        event = json.loads(sock.recv_multipart()[0])
        events[event["id"]].append(event)
        if event["final"]:
            open_.discard(event["id"])
    sock.setsockopt(zmq.RCVTIMEO, 300)
    with pytest.raises(zmq.Again):  # nothing after the final events
        sock.recv_multipart()
    return events


def test_a_client_that_leaves_its_output_unread_is_ended_not_buffered(int4_package, tmp_path):
    """Fixed: the send queue was capped at 100,000 messages, not bytes, so a client that never
    read made the daemon hold everything it was sent (12 unread `say` requests: +1.4 GB). Now a
    client with more than server.max_unread_bytes unread has its requests ended with
    `cancelled`, reason `unread_output` (finished ones too), and what waited for it is freed."""
    budget = 64 << 10
    sections = base_sections(int4_package, server={"max_unread_bytes": budget})
    daemon = Daemon(tmp_path, sections)
    try:
        with daemon.client() as c:
            c.chat("warm up", max_tokens=2)
        sock = non_reader(daemon.address, receive_timeout_ms=10000)
        sock.send(P.encode_request("done-1", "ping"))  # answered at once: on its way before the rest
        # How much output the kernel and ZeroMQ take off the daemon's hands differs between
        # machines (socket buffer sizes), and so does where a random model stops (CPU kernels
        # round differently), so long answers are asked for one at a time until one overruns.
        rids: list[str] = []
        with daemon.client() as other:
            for n in range(40):
                rids.append(f"long-{n}")
                sock.send(P.encode_request(rids[-1], "chat", messages=user(f"go on {rids[-1]}"), max_tokens=3000))
                wait_for(lambda: other.status()["inflight"] == 0, timeout=60)
                output = other.status()["output"]
                if output["overruns"]:
                    break
            assert other.call("ping")["pong"]  # everyone else is served as before
            assert output["overruns"] == 1 and output["unread_bytes"] <= budget, (len(rids), output)
        events = events_until_final(sock, set(rids) | {"done-1"})
        assert events["done-1"] == [{"v": 1, "id": "done-1", "event": "result", "final": True, "pong": True}]
        for rid in rids:  # what was on its way before the overrun arrives, then one end each
            finals = [e for e in events[rid] if e["final"]]
            assert finals == [events[rid][-1]]
            assert finals[0]["event"] == "result" or finals[0]["error"]["reason"] == "unread_output", finals
        final = events[rids[-1]][-1]  # the answer that overran the budget was ended, not finished
        assert final["event"] == "error", final
        assert final["error"]["code"] == "cancelled" and final["error"]["reason"] == "unread_output"
        # a client that reads again is served again
        assert raw_reply(sock, P.encode_request("again", "ping"))["pong"]
        sock.close()
    finally:
        daemon.stop()


# ---------------------------------------------------------------- batching and greedy answers (#11 item 20)

PROMPTS = [f"Read a parcel label aloud to me, please.{' Thank you.' * (3 * n)}" for n in range(12)]


def test_unbatched_requests_run_alone_and_answer_as_alone(int4_package):
    from edge_agent.engines.channel import EngineJob
    from edge_agent.engines.genai_chat import ChatWorker

    channel = Recorded()
    worker = ChatWorker(channel, {"package": str(int4_package), "threads": 1})

    def answers(unbatched: bool, together: bool) -> list[str]:
        start = len(channel.sent)
        jobs = [EngineJob(f"{unbatched}-{together}-{n}", {"messages": user(p), "max_tokens": 64,
                                                           "unbatched": unbatched}) for n, p in enumerate(PROMPTS)]
        most = 0
        for job in jobs:
            worker.handle(job)
            while not together and (worker.jobs or worker.held):
                worker.admit()
                worker.step_round()
        while worker.jobs or worker.held:
            worker.admit()
            most = max([most] + [len(b.jobs) for b in worker.batches])
            worker.step_round()
        if unbatched:
            assert most == 1  # never two in one batch
        elif together:
            assert most > 1
        results = {s[1]: s[2]["text"] for s in channel.sent[start:] if s[0] == "result"}
        return [results[job.job] for job in jobs]

    alone = answers(unbatched=False, together=False)
    batched = answers(unbatched=False, together=True)
    # what the option is for: prompts of other lengths in one batch change some greedy answers
    # (3 of these 12 on the tiny fixture; if a runtime ever batches bit-exactly, this line goes)
    assert batched != alone
    assert answers(unbatched=True, together=True) == alone
    worker.handle(EngineJob("alone", {"messages": user("wait"), "max_tokens": 4, "unbatched": True}))
    worker.handle(EngineJob("beside", {"messages": user("wait"), "max_tokens": 4}))
    worker.admit()
    assert sorted(len(b.jobs) for b in worker.batches if b.jobs) == [1, 1]  # nothing joins an unbatched one


def test_unbatched_is_a_chat_option(daemon):
    with daemon.client() as c:
        assert c.describe()["services"]["chat"]["unbatched"] is True
        assert c.call("chat", messages=user("hello"), max_tokens=3, unbatched=True)["usage"]["generated_tokens"] > 0
        with pytest.raises(EdgeAgentError) as err:
            c.call("chat", messages=user("hello"), unbatched="yes")
        assert err.value.code == "bad_request" and err.value.details["field"] == "unbatched"
