"""Image questions (`ask`) and vision OCR through a real daemon serving the tiny phi3v package."""
from __future__ import annotations

import io
import subprocess
import sys

import pytest
from PIL import Image, ImageDraw

from edge_agent import protocol as P
from edge_agent.client import EdgeAgentError

from .daemon_util import REPO, Daemon
from .test_camera import write_video
from .test_daemon import base_sections, raw_reply, raw_socket


def picture(color=(200, 30, 30), size=(640, 480), fmt="PNG") -> bytes:
    image = Image.new("RGB", size, (240, 240, 235))
    ImageDraw.Draw(image).rectangle([100, 100, 400, 300], fill=color)
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def daemon(int4_package, vision_package, tmp_path_factory):
    video = tmp_path_factory.mktemp("ask-video") / "door.avi"
    write_video(video)
    sections = base_sections(int4_package, models={"vision": str(vision_package)})
    sections["cameras.door"] = {"source": str(video)}
    d = Daemon(tmp_path_factory.mktemp("ask-daemon"), sections)
    yield d
    d.stop()


def answer(client, *args, **kwargs) -> list[dict]:
    events = list(client.ask_events(*args, **kwargs))
    if events[-1]["event"] == "error":
        raise EdgeAgentError(events[-1]["error"])
    return events


def test_ask_streams_an_answer(daemon):
    with daemon.client() as client:
        events = answer(client, "What colour is the box?", (picture(),), max_tokens=8)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "accepted" and kinds[-1] == "result" and kinds.count("delta") >= 2
    result = events[-1]
    assert result["text"] == "".join(e["text"] for e in events if e["event"] == "delta")
    assert result["usage"]["generated_tokens"] == 8 and result["images"] == 1
    # 640x480 at the runtime's 16 crops: a 3x4 grid of 336-pixel crops
    assert result["usage"]["image_tokens"] == 1921


def test_follow_up_questions_reuse_the_session_images(daemon):
    with daemon.client() as client:
        first = answer(client, "What is this?", (picture(),), max_tokens=4)[-1]
        follow = answer(client, "And its colour?", session=first["session"], max_tokens=4)[-1]
    assert follow["session"] == first["session"] and follow["images"] == 1
    assert follow["usage"]["image_tokens"] == first["usage"]["image_tokens"]
    assert follow["usage"]["prompt_tokens"] > first["usage"]["prompt_tokens"]  # the history came along


def test_two_images_in_one_question(daemon):
    with daemon.client() as client:
        result = answer(client, "Which differs?", (picture(), picture((20, 20, 200), (300, 900), "JPEG")),
                        max_tokens=3)[-1]
    assert result["images"] == 2 and result["usage"]["image_tokens"] == 1921 + 1957


def test_ask_about_the_camera(daemon):
    with daemon.client() as client:
        result = answer(client, "What number is shown?", camera="door", max_tokens=3)[-1]
    assert result["event"] == "result" and result["usage"]["image_tokens"] > 0


def test_vision_ocr_engine(daemon):
    with daemon.client() as client:
        result = client.ocr(picture(), engine="vision")
    assert result["engine"] == "vision" and isinstance(result["text"], str)
    assert result["usage"]["image_tokens"] == 1921


@pytest.mark.parametrize("fields, frames, code, field", [
    ({"question": "what?"}, [], "bad_request", "image"),
    ({}, [b"x"], "bad_request", "question"),
    ({"question": "what?", "camera": "nowhere"}, [], "not_found", "camera"),
    ({"question": "what?", "max_tokens": 99999}, [b"x"], "bad_request", "max_tokens"),
    ({"question": "what?"}, [b"1", b"2", b"3", b"4", b"5"], "bad_request", "image"),
])
def test_bad_ask_requests(daemon, fields, frames, code, field):
    sock = raw_socket(daemon)
    reply = raw_reply(sock, P.encode_request("a1", "ask", **fields), *frames)
    assert reply["event"] == "error" and reply["error"]["code"] == code and reply["error"].get("field") == field
    sock.close()


def test_unreadable_image_is_refused_and_the_engine_lives_on(daemon):
    with daemon.client() as client:
        with pytest.raises(EdgeAgentError) as err:
            answer(client, "What is it?", (b"definitely not a picture",))
        assert err.value.code == "bad_request" and err.value.details["field"] == "image"
        assert answer(client, "And now?", (picture(),), max_tokens=2)[-1]["event"] == "result"


def test_no_vision_package(int4_package, tmp_path):
    d = Daemon(tmp_path / "d", base_sections(int4_package, models={"vision": "absent"}))
    try:
        with d.client() as client:
            with pytest.raises(EdgeAgentError) as err:
                answer(client, "What?", (picture(),))
            assert err.value.code == "model_unavailable" and "'absent' not found" in err.value.message
            assert client.ping()
    finally:
        d.stop()


def test_cli_ask(daemon, tmp_path):
    path = tmp_path / "box.png"
    path.write_bytes(picture())
    result = subprocess.run([sys.executable, "-m", "edge_agent.cli", "ask", "--connect", daemon.address,
                             "--image", str(path), "--max-tokens", "4", "What is it?"],
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "image tokens" in result.stderr and result.stdout.strip()


def test_image_sessions_belong_to_their_client(daemon):
    with daemon.client() as victim, daemon.client() as other:
        first = answer(victim, "What is it?", (picture(),), max_tokens=2)[-1]
        sid = first["session"]
        assert sid.startswith("s-") and len(sid) > 20  # unguessable, not v-1
        for guess in ("v-1", "v-2", "s-1"):
            with pytest.raises(EdgeAgentError) as err:
                other.call("ask", question="What did they send?", session=guess)
            assert err.value.code == "not_found"
        assert sid not in [s["session"] for s in other.sessions("list")["sessions"]]
        listed = {s["session"]: s for s in victim.sessions("list")["sessions"]}
        assert listed[sid]["kind"] == "image" and listed[sid]["images"] == 1
        victim.sessions("delete", session=sid)  # image sessions can be deleted
        with pytest.raises(EdgeAgentError) as err:
            victim.call("ask", question="Still there?", session=sid)
        assert err.value.code == "not_found"


def test_an_admin_wipe_takes_image_and_chat_sessions_of_every_client(daemon):
    with daemon.client() as one, daemon.client() as two:
        image = answer(one, "What is it?", (picture(),), max_tokens=2)[-1]["session"]
        chat = two.sessions("create", system="Be brief.")["session"]
        two.call("chat", session=chat, message="Remember the number 42.", max_tokens=2)
        with daemon.admin_client() as admin:
            assert admin.sessions("reset", all_clients=True)["wiped"] >= 2
        for client, sid, op, fields in ((one, image, "ask", {"question": "Again?"}),
                                        (two, chat, "chat", {"message": "Which number?"})):
            assert client.sessions("list")["sessions"] == []
            with pytest.raises(EdgeAgentError) as err:
                client.call(op, session=sid, **fields)
            assert err.value.code == "not_found"
