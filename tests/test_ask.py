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
    # 640x480 at the package's 4 crops: a 2x2 grid of 336-pixel crops
    assert result["usage"]["image_tokens"] == 757 and result["usage"]["crops"] == [4]


@pytest.mark.parametrize("size, crops, used, tokens", [
    ((1600, 1200), 1, 1, 313), ((1600, 1200), 4, 4, 757), ((1600, 1200), 16, 12, 1921),
    ((640, 480), 16, 4, 757),  # a small image gets the crops it needs, not the budget
    ((336, 336), 16, 1, 313),
])
def test_the_crop_budget_is_chosen_per_question(daemon, size, crops, used, tokens):
    with daemon.client() as client:
        result = answer(client, "What is it?", (picture(size=size),), crops=crops, max_tokens=2)[-1]
    assert result["usage"]["crops"] == [used] and result["usage"]["image_tokens"] == tokens


def test_describe_lists_the_crop_range(daemon):
    with daemon.client() as client:
        vision = client.describe()["services"]["vision"]
    assert vision["crops"] == {"min": 1, "max": 16, "default": 4} and vision["kept_turns"] == 1


def test_follow_up_questions_reuse_the_session_images(daemon):
    with daemon.client() as client:
        first = answer(client, "What is this?", (picture(),), max_tokens=4)[-1]
        follow = answer(client, "And its colour?", session=first["session"], max_tokens=4)[-1]
    assert follow["session"] == first["session"] and follow["images"] == 1
    assert follow["usage"]["image_tokens"] == first["usage"]["image_tokens"]
    assert follow["usage"]["prompt_tokens"] > first["usage"]["prompt_tokens"]  # the history came along
    # the images and the first turn stayed in the KV cache: only the new turn was prompt-processed
    assert first["prompt_cache"] == "new" and follow["prompt_cache"] == "reused"
    first_usage, usage = first["usage"], follow["usage"]
    # (the answer's last token waits outside the cache until the session goes on)
    assert usage["cached_tokens"] == first_usage["prompt_tokens"] + first_usage["generated_tokens"] - 1
    assert usage["new_prompt_tokens"] == usage["prompt_tokens"] - usage["cached_tokens"] < 30


def test_a_follow_up_keeps_the_crop_budget_of_its_images(daemon):
    image = picture(size=(1600, 1200))
    with daemon.client() as client:
        first = answer(client, "What is this?", (image,), crops=1, max_tokens=3)[-1]
        follow = answer(client, "And its colour?", session=first["session"], max_tokens=3)[-1]
        finer = answer(client, "Look closer?", session=first["session"], crops=4, max_tokens=3)[-1]
    assert first["usage"]["crops"] == follow["usage"]["crops"] == [1] and follow["prompt_cache"] == "reused"
    assert finer["usage"]["crops"] == [4] and finer["prompt_cache"] == "new"  # the images seen afresh
    assert finer["usage"]["image_tokens"] == 757


def test_two_images_in_one_question(daemon):
    with daemon.client() as client:
        result = answer(client, "Which differs?", (picture(), picture((20, 20, 200), (300, 900), "JPEG")),
                        max_tokens=3)[-1]
    # 640x480 at 4 crops, and 300x900 at the 3 crops it needs (a 3x1 grid)
    assert result["images"] == 2 and result["usage"]["image_tokens"] == 757 + 625
    assert result["usage"]["crops"] == [4, 3]


def test_ask_about_the_camera(daemon):
    with daemon.client() as client:
        result = answer(client, "What number is shown?", camera="door", max_tokens=3)[-1]
    assert result["event"] == "result" and result["usage"]["image_tokens"] > 0


def test_vision_ocr_engine(daemon):
    with daemon.client() as client:
        result = client.ocr(picture(), engine="vision")
        finer = client.ocr(picture(size=(1600, 1200)), engine="vision", crops=16)
    assert result["engine"] == "vision" and isinstance(result["text"], str)
    assert result["usage"]["image_tokens"] == 757 and finer["usage"]["image_tokens"] == 1921


@pytest.mark.parametrize("fields, frames, code, field", [
    ({"question": "what?"}, [], "bad_request", "image"),
    ({}, [b"x"], "bad_request", "question"),
    ({"question": "what?", "camera": "nowhere"}, [], "not_found", "camera"),
    ({"question": "what?", "max_tokens": 99999}, [b"x"], "bad_request", "max_tokens"),
    ({"question": "what?"}, [b"1", b"2", b"3", b"4", b"5"], "bad_request", "image"),
    ({"question": "what?", "crops": 0}, [b"x"], "bad_request", "crops"),
    ({"question": "what?", "crops": 17}, [b"x"], "bad_request", "crops"),
    ({"question": "what?", "crops": "4"}, [b"x"], "bad_request", "crops"),
    ({"question": "what?", "crops": 2.5}, [b"x"], "bad_request", "crops"),
    ({"question": "what?", "crops": True}, [b"x"], "bad_request", "crops"),
])
def test_bad_ask_requests(daemon, fields, frames, code, field):
    sock = raw_socket(daemon)
    reply = raw_reply(sock, P.encode_request("a1", "ask", **fields), *frames)
    assert reply["event"] == "error" and reply["error"]["code"] == code and reply["error"].get("field") == field
    sock.close()


@pytest.mark.parametrize("fields", [{"engine": "fast", "crops": 4}, {"crops": 4}, {"engine": "vision", "crops": 0}])
def test_bad_ocr_crops(daemon, fields):
    sock = raw_socket(daemon)
    reply = raw_reply(sock, P.encode_request("o1", "ocr", **fields), picture())
    assert reply["event"] == "error" and reply["error"]["code"] == "bad_request"
    assert reply["error"]["field"] == "crops"
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


# ---------------------------------------------------------------- kept conversations (fp32 package)


@pytest.fixture(scope="module")
def fp32_daemon(int4_package, vision_package_fp32, tmp_path_factory):
    sections = base_sections(int4_package, models={"vision": str(vision_package_fp32)},
                             vision={"session_reserve_tokens": 64})
    d = Daemon(tmp_path_factory.mktemp("ask-fp32"), sections)
    yield d
    d.stop()


def test_the_package_num_crops_is_the_default(fp32_daemon):
    with fp32_daemon.client() as client:
        assert client.describe()["services"]["vision"]["crops"]["default"] == 16
        result = answer(client, "What is it?", (picture(size=(1600, 1200)),), max_tokens=1)[-1]
    assert result["usage"]["crops"] == [12] and result["usage"]["image_tokens"] == 1921


def test_the_most_recent_conversation_is_kept(fp32_daemon):
    """vision.kept_turns 1: a question in another session takes the kept KV; the first session's
    next question is prompt-processed again, images included, and still answered."""
    with fp32_daemon.client() as client:
        a1 = answer(client, "What is this?", (picture(),), max_tokens=4)[-1]
        b1 = answer(client, "What is this?", (picture(),), max_tokens=4)[-1]
        b2 = answer(client, "And its colour?", session=b1["session"], max_tokens=4)[-1]
        a2 = answer(client, "And its colour?", session=a1["session"], max_tokens=4)[-1]
        a3 = answer(client, "Anything else?", session=a1["session"], max_tokens=4)[-1]
    assert a1["text"] == b1["text"]  # greedy: the same question about the same image
    assert b2["prompt_cache"] == "reused" and a2["prompt_cache"] == "new" and a3["prompt_cache"] == "reused"
    assert a2["usage"]["cached_tokens"] == 0 and a2["usage"]["image_tokens"] == b2["usage"]["image_tokens"]


def test_a_turn_that_outgrows_the_reserve_is_processed_afresh(fp32_daemon):
    with fp32_daemon.client() as client:
        first = answer(client, "What is this?", (picture(),), max_tokens=4)[-1]
        long_question = "Describe every part of the picture, " * 12  # ~100 tokens: more than the 64 kept
        follow = answer(client, long_question, session=first["session"], max_tokens=4)[-1]
        again = answer(client, "Short one?", session=first["session"], max_tokens=4)[-1]
    assert follow["prompt_cache"] == "new" and follow["usage"]["cached_tokens"] == 0
    assert again["prompt_cache"] == "reused"  # the new KV was sized with its own reserve


def test_new_images_in_a_session_start_afresh(fp32_daemon):
    with fp32_daemon.client() as client:
        first = answer(client, "What is this?", (picture(),), max_tokens=3)[-1]
        other = answer(client, "And this?", (picture((10, 10, 200)),), session=first["session"], max_tokens=3)[-1]
    assert other["prompt_cache"] == "new" and other["usage"]["prompt_tokens"] < first["usage"]["prompt_tokens"] + 10


def test_a_kept_generator_continues_as_a_fresh_prefill_would(vision_package_fp32):
    """What reuse rests on: a phi3v Generator that chose its answer's tokens and appended them
    one by one (as the engine does), then got the next turn's ids, gives the logits a new
    Generator fed every id at once gives (fp32: rounding only). onnxruntime-genai 0.18's own
    generate_next_token path does not (the control), which is why the engine appends."""
    import numpy as np
    import onnxruntime_genai as og

    from edge_agent.engines.phi3v_inputs import generator_inputs, prepare_images, prompt_ids

    model = og.Model(str(vision_package_fp32))
    tokenizer = og.Tokenizer(model)
    encode = lambda text: [int(t) for t in tokenizer.encode(text)]  # noqa: E731
    prepared = prepare_images([Image.open(io.BytesIO(picture()))], 4)
    ids = prompt_ids(encode, "<|user|>\n<|image_1|>\nWhat is it?<|end|>\n<|assistant|>\n", prepared.tokens)
    suffix = encode("<|end|>\n<|user|>\nAnd the colour?<|end|>\n<|assistant|>\n")

    def generator(length):
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=length)
        made = og.Generator(model, params)
        return made

    def last_logits(made):
        return np.asarray(made.get_logits()).reshape(-1)

    kept = generator(ids.shape[1] + 64)
    kept.set_inputs(generator_inputs(og, ids, prepared))
    answered = []
    for _ in range(5):
        answered.append(int(np.argmax(last_logits(kept))))
        if len(answered) < 5:
            kept.append_tokens(np.asarray(answered[-1:], dtype=np.int32))
    kept.append_tokens(np.asarray(answered[-1:] + suffix, dtype=np.int32))  # the pending token, then the turn
    every_id = np.concatenate([ids[0], answered, suffix])[None]
    fresh = generator(every_id.shape[1] + 1)
    fresh.set_inputs(generator_inputs(og, every_id, prepared))
    assert kept.token_count() == every_id.shape[1]
    assert np.abs(last_logits(kept) - last_logits(fresh)).max() < 1e-4

    control = generator(ids.shape[1] + 64)
    control.set_inputs(generator_inputs(og, ids, prepared))
    for _ in range(5):
        control.generate_next_token()
    assert [int(t) for t in control.get_sequence(0)[-5:]] == answered
    control.append_tokens(np.asarray(suffix, dtype=np.int32))
    assert np.abs(last_logits(control) - last_logits(fresh)).max() > 1e-3  # ~1.7e-3 on this fixture
