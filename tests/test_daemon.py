"""The daemon as clients see it: a real `edge-agent serve` process on a real IPC socket,
serving the tiny INT4 package through onnxruntime-genai's engine."""
from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest
import zmq

from edge_agent import protocol as P
from edge_agent.client import Client, EdgeAgentError

from .daemon_util import Daemon


def base_sections(package, **overrides) -> dict:
    sections = {
        "server": {"max_inflight_per_client": 3, "max_queue": 5, "max_message_bytes": 2 << 20,
                   "shutdown_grace_s": 1.0},
        "models": {"dir": str(package.parent), "chat": str(package), "keep_alive_s": 0.0},
        "chat": {"max_tokens_limit": 3000, "engine_timeout_s": 4.0},
    }
    for section, values in overrides.items():
        sections.setdefault(section, {}).update(values)
    return sections


@pytest.fixture(scope="module")
def daemon(int4_package, tmp_path_factory):
    d = Daemon(tmp_path_factory.mktemp("daemon"), base_sections(int4_package))
    yield d
    d.stop()


@pytest.fixture
def client(daemon):
    with daemon.client() as c:
        yield c


def chat_events(client: Client, **fields) -> list[dict]:
    return list(client.events("chat", **fields))


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def raw_socket(daemon) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 10000)
    sock.connect(daemon.address)
    return sock


def raw_reply(sock: zmq.Socket, *frames: bytes) -> dict:
    sock.send_multipart(list(frames))
    return json.loads(sock.recv_multipart()[0])


def until_delta(client: Client, rid: str, timeout: float = 20) -> None:
    """Wait until request `rid` is generating."""
    while True:
        event = client.next_event(rid, timeout)
        if event["event"] == "delta":
            return
        assert not event["final"], f"request ended before streaming: {event}"


def final_event(client: Client, rid: str, timeout: float = 30) -> dict:
    while True:
        event = client.next_event(rid, timeout)
        if event["final"]:
            return event


def wait_for(predicate, timeout=10.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


# ---------------------------------------------------------------- describe / status / chat


def test_describe(client):
    info = client.describe()
    assert info["protocol"] == {"version": 1, "supported": [1]}
    assert set(info["ops"]) == {"describe", "status", "ping", "chat", "cancel", "sessions", "models", "ocr", "capture",
                                "guide", "ask", "say", "voices", "speech", "listen", "assist"}
    assert info["limits"]["max_inflight_per_client"] == 3 and info["limits"]["max_queue"] == 5
    chat = info["services"]["chat"]
    assert chat["available"] and chat["context_length"] == 4096 and chat["sessions"]


def test_streaming_chat(client):
    events = chat_events(client, messages=user("Tell me a story"), max_tokens=24)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "accepted" and kinds[-1] == "result"
    assert kinds.count("result") == 1 and all(not e["final"] for e in events[:-1])
    deltas = [e for e in events if e["event"] == "delta"]
    assert len(deltas) >= 2  # streamed, not one blob
    result = events[-1]
    assert result["text"] == "".join(d["text"] for d in deltas)
    usage = result["usage"]
    assert usage["generated_tokens"] == sum(d["tokens"] for d in deltas)
    assert usage["generated_tokens"] <= 24 and result["finish_reason"] in ("length", "stop")
    assert usage["prompt_tokens"] > 5 and usage["cached_tokens"] == 0 and result["prompt_cache"] == "new"
    assert usage["ttft_ms"] > 0 and usage["total_ms"] >= usage["ttft_ms"]


def test_status_reports_the_loaded_engine(client):
    list(client.chat("hi", max_tokens=2))
    status = client.status()
    engine = status["engines"]["chat"]
    assert engine["state"] == "ready" and engine["pid"] and engine["rss_bytes"] > 10 << 20
    assert status["rss_bytes"] > engine["rss_bytes"] and status["uptime_s"] > 0
    assert status["inflight"] == 0


def test_compute_engines_yield_the_cpu_to_the_daemon_and_speech(daemon, client):
    # [models] nice (default 10): a model that keeps every core busy must not delay the socket
    # loop or speech synthesis (measured in bench/speech.py: chat sentence to first audio)
    list(client.chat("hi", max_tokens=2))
    engines = client.status()["engines"]
    base = os.getpriority(os.PRIO_PROCESS, daemon.process.pid)
    assert os.getpriority(os.PRIO_PROCESS, engines["chat"]["pid"]) == min(19, base + 10)
    assert os.getpriority(os.PRIO_PROCESS, engines["speech"]["pid"]) == base


def test_greedy_is_deterministic_and_sampling_options(client):
    a = "".join(client.chat("Same prompt", max_tokens=12))
    b = "".join(client.chat("Same prompt", max_tokens=12))
    assert a == b
    sampled = client.call("chat", messages=user("Same prompt"), max_tokens=12, temperature=1.5, top_p=0.9, top_k=40)
    assert sampled["usage"]["generated_tokens"] > 0
    # the CPU engine is static: onnxruntime-genai reseeds a turn only with dynamic batching
    assert "seed" not in client.describe()["services"]["chat"]["sampling"]
    with pytest.raises(EdgeAgentError) as err:
        client.call("chat", messages=user("Same prompt"), max_tokens=4, temperature=1.0, seed=7)
    assert err.value.code == "unsupported" and err.value.details["field"] == "seed"


def test_four_concurrent_clients(daemon):
    results, errors = {}, []

    def run(n):
        try:
            with daemon.client() as c:
                events = list(c.chat_events(f"Client {n} asks", max_tokens=40))
                results[n] = events
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(results) == 4
    for events in results.values():
        assert events[-1]["event"] == "result"
        assert events[-1]["usage"]["generated_tokens"] == sum(e["tokens"] for e in events if e["event"] == "delta")


def test_stop_string_ends_the_answer_before_it(client):
    free = client.call("chat", messages=user("Keep talking"), max_tokens=30)["text"]
    stop = free[len(free) // 2: len(free) // 2 + 3]
    assert stop.strip()
    stopped = client.call("chat", messages=user("Keep talking"), max_tokens=30, stop=[stop])
    assert stopped["finish_reason"] == "stop_string"
    assert stopped["text"] == free[:free.index(stop)]
    assert stop not in stopped["text"]


def test_json_schema_constrains_the_answer(client):
    assert client.describe()["services"]["chat"]["json_schema"] is True
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
              "additionalProperties": False}
    result = client.call("chat", messages=user("Answer in JSON"), json_schema=schema, max_tokens=40)
    assert isinstance(json.loads(result["text"])["ok"], bool)


# ---------------------------------------------------------------- sessions


def test_session_turns_reuse_the_kv_cache(client):
    sid = client.sessions("create", system="You are terse.")["session"]
    first = client.call("chat", session=sid, message="First question", max_tokens=8)
    assert first["prompt_cache"] == "new" and first["session"] == sid
    second = client.call("chat", session=sid, message="Second question", max_tokens=8)
    usage = second["usage"]
    assert second["prompt_cache"] == "reused"
    assert usage["cached_tokens"] == first["usage"]["prompt_tokens"] + first["usage"]["generated_tokens"]
    assert usage["prompt_tokens"] == usage["cached_tokens"] + usage["new_prompt_tokens"]
    listed = {s["session"]: s for s in client.sessions("list")["sessions"]}
    assert listed[sid]["turns"] == 2
    client.sessions("reset", session=sid)
    third = client.call("chat", session=sid, message="After reset", max_tokens=4)
    assert third["prompt_cache"] == "new" and third["usage"]["prompt_tokens"] < usage["prompt_tokens"]
    client.sessions("delete", session=sid)
    with pytest.raises(EdgeAgentError) as err:
        client.call("chat", session=sid, message="gone")
    assert err.value.code == "not_found"


def test_session_keeps_its_cache_while_other_work_runs_beside_it(daemon, client):
    """Other clients' requests run in other batches (#12), so a session's kept turn survives
    them (test_scheduling covers the eviction when every batch is needed)."""
    sid = client.sessions("create")["session"]
    client.call("chat", session=sid, message="one", max_tokens=4)
    with daemon.client() as other:
        other.call("chat", messages=user("someone else"), max_tokens=4)
    again = client.call("chat", session=sid, message="two", max_tokens=4)
    assert again["prompt_cache"] == "reused" and again["usage"]["cached_tokens"] > 10


def test_session_runs_one_turn_at_a_time(client):
    sid = client.sessions("create")["session"]
    rid = client.send("chat", session=sid, message="long", max_tokens=2000)
    assert client.next_event(rid, 10)["event"] == "accepted"
    with pytest.raises(EdgeAgentError) as err:
        client.call("chat", session=sid, message="meanwhile", max_tokens=2)
    assert err.value.code == "busy"
    client.cancel(rid)
    final_event(client, rid)


# ---------------------------------------------------------------- cancel


def test_cancel_in_flight_and_unknown(client):
    rid = client.send("chat", messages=user("Go on and on"), max_tokens=3000)
    until_delta(client, rid)
    ack = client.cancel(rid)
    assert ack["cancelled"] is True
    events = []
    while not events or not events[-1]["final"]:
        events.append(client.next_event(rid, 10))
    assert events[-1]["event"] == "error" and events[-1]["error"]["code"] == "cancelled"
    generated = sum(e.get("tokens", 0) for e in events if e["event"] == "delta")
    assert generated < 2900
    finished = client.cancel(rid)  # already ended: forgotten, like an id never sent
    assert finished["cancelled"] is False and finished["reason"] == "unknown"
    assert client.cancel("never-sent")["reason"] == "unknown"


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("frames, code, field", [
    ([b"not json"], "bad_request", None),
    ([b"\xff\xfe"], "bad_request", None),
    ([b"[1, 2]"], "bad_request", None),
    ([b'{"v": 1, "op": "ping"}'], "bad_request", "id"),
    ([b'{"v": 1, "id": "x", "op": "dance"}'], "bad_request", "op"),
    ([b'{"v": 2, "id": "x", "op": "ping"}'], "unsupported", None),
    ([b'{"v": 1, "id": "x", "op": "ping", "extra": 1}'], "bad_request", "extra"),
    ([b'{"v": 1, "id": "x", "op": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": "ten"}'],
     "bad_request", "max_tokens"),
    ([b'{"v": 1, "id": "x", "op": "chat", "messages": [{"role": "user", "content": "hi"}], "temperature": -1}'],
     "bad_request", "temperature"),
    ([b'{"v": 1, "id": "x", "op": "chat", "messages": [{"role": "robot", "content": "hi"}]}'], "bad_request",
     "messages"),
    ([b'{"v": 1, "id": "x", "op": "chat", "messages": []}'], "bad_request", "messages"),
    ([b'{"v": 1, "id": "x", "op": "chat", "messages": [{"role": "user", "content": "hi"}], "stop": [""]}'],
     "bad_request", "stop"),
    ([b'{"v": 1, "id": "x", "op": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 99999}'],
     "bad_request", "max_tokens"),
    ([b'{"v": 1, "id": "x", "op": "cancel"}'], "bad_request", "target"),
    ([b'{"v": 1, "id": "x", "op": "sessions", "action": "explode"}'], "bad_request", "action"),
])
def test_bad_requests_get_typed_errors(daemon, frames, code, field):
    sock = raw_socket(daemon)
    reply = raw_reply(sock, *frames)
    assert reply["event"] == "error" and reply["final"] is True
    assert reply["error"]["code"] == code
    if field:
        assert reply["error"].get("field") == field
    if code == "unsupported":
        assert reply["error"]["supported"] == [1]
    assert raw_reply(sock, P.encode_request("after", "ping"))["pong"] is True  # the daemon is fine
    sock.close()


def test_empty_message_frame_and_envelope_clients(daemon):
    sock = raw_socket(daemon)
    # a REQ-style empty delimiter is accepted and mirrored
    sock.send_multipart([b"", P.encode_request("e1", "ping")])
    frames = sock.recv_multipart()
    assert frames[0] == b"" and json.loads(frames[1])["pong"] is True
    sock.send_multipart([b""])  # only an envelope, no header
    frames = sock.recv_multipart()
    assert frames[0] == b"" and json.loads(frames[1])["error"]["code"] == "bad_request"
    sock.close()


def test_oversized_message(daemon):
    sock = raw_socket(daemon)
    reply = raw_reply(sock, P.encode_request("big", "ping"), b"x" * (3 << 20))
    assert reply["id"] == "big" and reply["error"]["code"] == "too_large"
    header = b'{"v": 1, "id": "h", "op": "ping", "pad": "' + b"y" * (1 << 20) + b'"}'
    assert raw_reply(sock, header)["error"]["code"] == "too_large"
    sock.close()


def test_frame_over_the_hard_cap_drops_only_that_connection(daemon, client):
    sock = raw_socket(daemon)
    sock.send_multipart([P.encode_request("huge", "ping"), b"z" * (65 << 20)])
    sock.setsockopt(zmq.RCVTIMEO, 2000)
    with pytest.raises(zmq.Again):
        sock.recv_multipart()  # ZeroMQ drops the peer; no reply
    sock.close()
    assert client.ping()


def test_duplicate_id_in_flight(client):
    client.send("chat", rid="dup", messages=user("long"), max_tokens=2000)
    assert client.next_event("dup", 10)["event"] == "accepted"
    second = client.send("ping", rid="dup")
    # The chat's own deltas share the id and may come first; the refusal must arrive while it streams.
    event = client.next_event("dup", 10)
    while not (event["event"] == "error" and "still in flight" in event["error"]["message"]):
        assert not event["final"], f"chat ended before the duplicate was refused: {event}"
        event = client.next_event("dup", 10)
    assert second == "dup" and event["error"]["field"] == "id"
    client.cancel("dup")
    final_event(client, "dup")


def test_too_many_in_flight_and_queue_full(daemon):
    with daemon.client() as a, daemon.client() as b:
        ids = [a.send("chat", messages=user(f"a{n}"), max_tokens=2000) for n in range(3)]
        refused = a.send("chat", messages=user("a4"), max_tokens=2)
        reply = a.next_event(refused, 10)
        assert reply["error"]["code"] == "busy" and reply["error"]["retry_after_ms"] > 0
        assert "in flight" in reply["error"]["message"]
        more = [b.send("chat", messages=user(f"b{n}"), max_tokens=2000) for n in range(3)]
        replies = [b.next_event(rid, 10) for rid in more]
        full = [r for r in replies if r["event"] == "error"]
        assert len(full) == 1 and full[0]["error"]["code"] == "busy" and "queue is full" in full[0]["error"]["message"]
        for c, rids in ((a, ids), (b, more)):
            for rid in rids:
                c.send("cancel", target=rid)
    with daemon.client() as observer:
        wait_for(lambda: observer.status()["inflight"] == 0)


def test_client_that_disappears_mid_stream_is_cancelled(daemon, client):
    gone = daemon.client()
    rid = gone.send("chat", messages=user("talk forever"), max_tokens=3000)
    until_delta(gone, rid)
    gone.close()
    started = time.monotonic()
    wait_for(lambda: client.status()["inflight"] == 0, timeout=10)
    assert time.monotonic() - started < 5
    assert "".join(client.chat("still here?", max_tokens=4)) is not None
    assert "unreachable" in daemon.log()


# ---------------------------------------------------------------- engine failures


def long_chat_on_loaded_engine(client: Client) -> tuple[int, str]:
    """Load the engine, start a long answer, wait until it streams; return (engine pid, id)."""
    list(client.chat("warm up", max_tokens=2))
    pid = client.status()["engines"]["chat"]["pid"]
    rid = client.send("chat", messages=user("long answer"), max_tokens=3000)
    until_delta(client, rid)
    return pid, rid


def test_crashed_engine_is_restarted(daemon, client):
    pid, rid = long_chat_on_loaded_engine(client)
    os.kill(pid, signal.SIGKILL)
    event = final_event(client, rid)
    assert event["event"] == "error" and event["error"]["code"] == "internal"
    assert "signal 9" in event["error"]["message"]
    status = wait_for(lambda: (s := client.status())["engines"]["chat"]["state"] == "ready" and s)
    assert status["engines"]["chat"]["restarts"] >= 1 and status["engines"]["chat"]["pid"] != pid
    assert client.call("chat", messages=user("after the crash"), max_tokens=3)["usage"]["generated_tokens"] > 0


def test_hung_engine_times_out_and_is_restarted(daemon, client):
    pid, rid = long_chat_on_loaded_engine(client)
    os.kill(pid, signal.SIGSTOP)  # hangs without dying
    started = time.monotonic()
    assert client.ping()  # the socket loop does not wait for the engine
    assert client.status()["engines"]["chat"]["state"] == "ready"
    event = final_event(client, rid)
    assert event["error"]["code"] == "timeout" and time.monotonic() - started >= 3.5
    wait_for(lambda: client.status()["engines"]["chat"]["state"] == "ready", timeout=30)
    assert client.call("chat", messages=user("after the hang"), max_tokens=3)["usage"]["generated_tokens"] > 0
