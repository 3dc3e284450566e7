"""The server's dispatch table and its one accept path: every op has exactly one handler,
and `cancel` ends a job of any op with `cancelled`, whichever service (or none) runs it."""
from __future__ import annotations

import time

import pytest

from edge_agent import protocol as P
from edge_agent.config import Config
from edge_agent.server import Server

from .daemon_util import Daemon
from .test_daemon import base_sections, user, wait_for
from .test_speech import LONG


def test_every_op_has_exactly_one_handler_and_every_handler_an_op():
    server = Server(Config())
    parsed = set(P._PARSERS)
    handlers = {name[len("op_"):] for name in dir(server.ops) if name.startswith("op_")}
    assert set(P.OPS) == parsed == handlers == set(server.handlers)
    assert all(callable(handler) for handler in server.handlers.values())
    server.context.term()


@pytest.fixture(scope="module")
def daemon(int4_package, tmp_path_factory):
    from .speech_util import AlsaFileDevice

    folder = tmp_path_factory.mktemp("cancel-daemon")
    device = AlsaFileDevice(folder / "alsa")
    sections = base_sections(int4_package, server={"max_inflight_per_client": 8, "max_queue": 16})
    # a camera whose source never delivers a frame: a capture waits for it (5 s, then `timeout`)
    sections["cameras.dark"] = {"source": str(folder / "no-such-video.avi")}
    d = Daemon(folder / "d", sections, env=device.env)
    yield d
    d.stop()


# op, its fields: each stays in flight for seconds unless cancelled
HELD_OPS = [
    ("capture", {"camera": "dark"}),
    ("ocr", {"camera": "dark"}),
    ("guide", {"camera": "dark"}),
    ("ask", {"question": "What is it?", "camera": "dark"}),
    ("say", {"text": LONG}),
    ("chat", {"messages": user("talk for a long time"), "max_tokens": 2000}),
]


@pytest.mark.parametrize("op, fields", HELD_OPS, ids=[op for op, _ in HELD_OPS])
def test_cancel_ends_a_job_of_any_op_with_cancelled_and_nothing_after(daemon, op, fields):
    with daemon.client(timeout=30) as client:
        rid = client.send(op, **fields)
        assert client.next_event(rid, 20)["event"] == "accepted"
        time.sleep(0.3)  # the job is under way (waiting for a frame, speaking, generating)
        sent = time.monotonic()
        assert client.cancel(rid)["cancelled"] is True
        event = client.next_event(rid, 10)
        while not event["final"]:
            event = client.next_event(rid, 10)
        latency = time.monotonic() - sent
        assert event["event"] == "error" and event["error"]["code"] == "cancelled", event
        assert latency < 1.0, f"{op}: cancelled after {latency:.2f} s"
        with pytest.raises(TimeoutError):  # exactly one terminal event: no late `timeout` or result
            client.next_event(rid, 6)
        assert client.status()["inflight"] == 0


def test_cancel_of_a_model_load_ends_it_with_cancelled_and_the_load_goes_on(daemon, int4_package):
    with daemon.admin_client(timeout=30) as admin:
        admin.models("unload", int4_package.name)
        assert admin.status()["engines"]["chat"]["state"] == "unloaded"
        rid = admin.send("models", action="load", name=int4_package.name)
        assert admin.next_event(rid, 10)["event"] == "accepted"  # a load is a request like any other
        assert admin.cancel(rid)["cancelled"] is True  # the engine process takes a second or more to start
        event = admin.next_event(rid, 5)
        assert event["event"] == "error" and event["error"]["code"] == "cancelled", event
        with pytest.raises(TimeoutError):
            admin.next_event(rid, 3)
        wait_for(lambda: admin.status()["engines"]["chat"]["state"] == "ready", timeout=30)
