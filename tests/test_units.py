"""Pure pieces of the daemon: protocol validation, config parsing, stop-string streaming."""
from __future__ import annotations

import json

import pytest

from edge_agent import protocol as P
from edge_agent.config import ConfigError, is_loopback_endpoint, load_config
from edge_agent.engines.stopstrings import StopStringFilter


def parse(**doc):
    return P.parse_request([json.dumps({"v": 1, "id": "r", **doc}).encode()])


def test_chat_request_defaults_and_types():
    request = parse(op="chat", messages=[{"role": "system", "content": "s"}, {"role": "user", "content": "u"}])
    body = request.body
    assert (body.max_tokens, body.temperature, body.top_p, body.top_k, body.context_policy, body.stream) == \
        (None, 0.0, 1.0, 0, "error", True)
    assert body.messages[0] == P.Message("system", "s")
    session = parse(op="chat", session="s-1", message="hi", max_tokens=3).body
    assert session.session == "s-1" and session.message == "hi" and session.max_tokens == 3


@pytest.mark.parametrize("doc, field", [
    ({"op": "chat", "messages": [{"role": "user", "content": "a"}], "session": "s"}, "messages"),
    ({"op": "chat", "session": "s"}, "message"),
    ({"op": "chat", "messages": [{"role": "assistant", "content": "a"}]}, "messages"),
    ({"op": "chat", "messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"},
                                 {"role": "user", "content": "c"}]}, "messages"),
    ({"op": "chat", "messages": [{"role": "user", "content": 5}]}, "messages"),
    ({"op": "chat", "messages": [{"role": "user", "content": "a"}], "top_p": 0}, "top_p"),
    ({"op": "chat", "messages": [{"role": "user", "content": "a"}], "top_k": True}, "top_k"),
    ({"op": "chat", "messages": [{"role": "user", "content": "a"}], "stream": "yes"}, "stream"),
    ({"op": "chat", "messages": [{"role": "user", "content": "a"}], "json_schema": "object"}, "json_schema"),
    ({"op": "chat", "messages": [{"role": "user", "content": "a"}], "stop": ["x"] * 17}, "stop"),
    ({"op": "chat", "messages": [{"role": "user", "content": "a"}], "context_policy": "truncate"}, "context_policy"),
    ({"op": "chat", "messages": [{"role": "user", "content": "a"}], "temperature": float("nan")}, "temperature"),
    ({"op": "sessions"}, "action"),
    ({"op": "models", "action": "delete"}, "action"),
])
def test_bad_fields_name_the_field(doc, field):
    with pytest.raises(P.ProtocolError) as err:
        parse(**doc)
    assert err.value.code == P.BAD_REQUEST and err.value.extra.get("field") == field


def test_ids_and_versions():
    with pytest.raises(P.ProtocolError, match="'id'"):
        P.parse_request([b'{"v": 1, "id": "' + b"x" * 65 + b'", "op": "ping"}'])
    with pytest.raises(P.ProtocolError) as err:
        P.parse_request([b'{"id": "a", "op": "ping"}'])
    assert err.value.code == P.UNSUPPORTED
    assert P.request_id_of(b'{"id": "abc", "op": 5}') == "abc"
    assert P.request_id_of(b"garbage") is None


def test_events_round_trip():
    frame = P.event("r", "delta", text="h\u00e9", tokens=1)
    assert P.decode_event(frame) == {"v": 1, "id": "r", "event": "delta", "final": False, "text": "hé", "tokens": 1}
    error = P.decode_event(P.error("r", P.ProtocolError(P.BUSY, "full", retry_after_ms=10)))
    assert error["final"] and error["error"] == {"code": "busy", "message": "full", "retry_after_ms": 10}


# ---------------------------------------------------------------- stop strings

def test_stop_string_split_across_pieces_is_never_shown():
    f = StopStringFilter(["STOP"])
    shown = [f.push(p) for p in ("Hello ", "wor", "ld S", "TO", "P and more")]
    assert "".join(shown) + f.finish() == "Hello world "
    assert f.stopped and f.visible_text == "Hello world "


def test_held_back_prefix_is_released_when_it_is_not_a_stop():
    f = StopStringFilter(["<end>"])
    assert f.push("a <e") == "a "
    assert f.push("nd") == ""
    assert f.push("less") == "<endless"
    assert f.finish() == "" and not f.stopped


def test_earliest_of_several_stops_wins():
    f = StopStringFilter(["bb", "a"])
    f.push("xxbbya")
    assert f.visible_text == "xx"


def test_no_stop_strings_streams_everything():
    f = StopStringFilter([])
    assert f.push("abc") == "abc" and f.finish() == ""


# ---------------------------------------------------------------- config

def write(tmp_path, text: str):
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, message", [
    ("[server\n", "not valid TOML"),
    ("[sever]\n", "unknown key(s) in [config]: sever"),
    ("[server]\nendpoints = 'ipc:///x'\n", "server.endpoints must be a list of strings"),
    ("[server]\nendpoints = ['udp://1.2.3.4:1']\n", "use ipc://PATH or tcp://HOST:PORT"),
    ("[server]\nendpoints = ['tcp://192.168.1.5:5555']\n", "without CURVE"),
    ("[server]\nendpoints = ['tcp://myhost:5555']\n", "without CURVE"),
    ("[server.curve]\nserver_secret_file = '/k'\n", "authorized_clients_dir is required"),
    ("[models]\nkeep_alive_s = -1\n", "must not be negative"),
    ("[models]\npreload = 1\n", "models.preload must be true or false"),
    ("[ocr]\nmemory_arena = \"yes\"\n", "ocr.memory_arena must be true or false"),
    ("[models]\nnice = 20\n", "models.nice must be 0 to 19"),
    ("[chat]\ndefault_max_tokens = 5000\n", "default_max_tokens"),
    ("[chat]\nsession_reserve_tokens = -1\n", "chat.session_reserve_tokens"),
    ("[vision]\nsession_reserve_tokens = 200000\n", "vision.session_reserve_tokens"),
    ("[vision]\ncrops = 17\n", "vision.crops must be 0 to 16"),
    ("[vision]\ncrops = 'many'\n", "vision.crops"),
    ("[vision]\nkept_turns = 9\n", "vision.kept_turns 0 to 8"),
    ("[listen]\nvad_mode = 4\n", "listen.vad_mode must be 0 to 3"),
    ("[listen]\nend_silence_ms = 20\n", "listen.end_silence_ms and command_end_silence_ms 90 to 3000"),
    ("[listen]\ncommand_end_silence_ms = 5000\n", "listen.end_silence_ms and command_end_silence_ms 90 to 3000"),
    ("[listen]\nmax_utterance_s = 30.0\nmax_audio_s = 20.0\n", "at most listen.max_audio_s"),
    ("[listen]\nengine_timeout_s = 0.0\n", "listen.keep_alive_s must not be negative"),
    ("[listen]\nmicrophone = \"everyone\"\n", "listen.microphone must be one of admin, any, off"),
    ("[listen]\nwait_s = 0.0\n", "listen.wait_s 0.5 to 3600"),
    ("[listen]\nlanguage = \"English\"\n", "listen.language 'English' is not a language code"),
    ("[assist]\nwake_phrase = \" \"\n", "assist.wake_phrase must not be empty"),
    ("[assist]\ncommand_wait_s = 100.0\n", "command_wait_s 0.5 to 60"),
    ("[assist]\ncommands = \"louder\"\n", "assist.commands must be a list of strings"),
    ("[logging]\nlevel = 'loud'\n", "logging.level"),
])
def test_config_errors(tmp_path, text, message):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert message in str(err.value)


def test_config_values_and_defaults(tmp_path):
    config = load_config(write(tmp_path, "[server]\nendpoints = ['tcp://127.0.0.1:7000', 'ipc:///tmp/a.sock']\n"
                                         "[models]\nkeep_alive_s = 10\ndir = '~/m'\n"))
    assert config.server.endpoints == ["tcp://127.0.0.1:7000", "ipc:///tmp/a.sock"]
    assert config.models.keep_alive_s == 10.0 and config.models_dir.is_absolute()
    assert config.chat.max_tokens_limit == 1024 and config.server.max_queue == 16
    default = load_config(None)
    assert default.server.endpoints[0].startswith("ipc://") and default.server.endpoints[0].endswith("agent.sock")


def test_example_config_in_the_repository_is_valid():
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "systemd" / "edge-agent.toml"
    config = load_config(example)
    assert config.server.endpoints == ["ipc:///run/edge-agent/agent.sock"]


@pytest.mark.parametrize("endpoint, loopback", [
    ("ipc:///run/x.sock", True), ("tcp://127.0.0.1:1", True), ("tcp://[::1]:1", True), ("tcp://localhost:1", True),
    ("tcp://0.0.0.0:1", False), ("tcp://10.0.0.2:1", False), ("tcp://*:1", False), ("tcp://eth0:1", False),
])
def test_loopback_detection(endpoint, loopback):
    assert is_loopback_endpoint(endpoint) is loopback


@pytest.mark.parametrize("text, message", [
    ("[cameras.front]\nwidth = 640\n", "cameras.front.source is required"),
    ("[cameras.'bad name']\nsource = '/dev/video0'\n", "camera name 'bad name'"),
    ("[cameras.front]\nsource = '/dev/video0'\nfps = 30\n", "unknown key(s) in [cameras.front]: fps"),
    ("cameras = 5\n", "[cameras] must be a table"),
])
def test_camera_config_errors(tmp_path, text, message):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert message in str(err.value)


def test_camera_config(tmp_path):
    config = load_config(write(tmp_path, "[cameras.front]\nsource = '/dev/video0'\nwidth = 1280\nheight = 720\n"
                                         "[cameras.csi]\nsource = 'gst:nvarguscamerasrc ! appsink'\n"))
    assert config.cameras["front"].width == 1280 and config.cameras["csi"].source.startswith("gst:")
