"""Python clients for the edge-agent daemon: `AsyncClient` (asyncio) and `Client`, its
blocking wrapper. Every operation is written once, in AsyncClient; Client runs the same
coroutines on a private event loop thread, so both offer the same operations with the same
return shapes (a coroutine's value, or an async iterator's items as a plain iterator).

    with Client() as agent:
        for piece in agent.chat("Read me the label", system="Be brief"):
            print(piece, end="", flush=True)
        print(agent.last_result["usage"])

    async with AsyncClient() as agent:
        async for piece in agent.chat("Read me the label"):
            print(piece, end="", flush=True)

Both speak protocol v1 (docs/protocol.md) over one DEALER socket that may carry several
requests at once; a reader task routes events to each request by id. The address comes from
the argument, else $EDGE_AGENT_ADDRESS, else the default IPC socket. A request that times out
is cancelled on the daemon and raises TimeoutError; when no other request is in flight the
socket is then recreated (ZeroMQ itself reconnects to a restarted daemon).
"""
from __future__ import annotations

import asyncio
import functools
import itertools
import os
import threading
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

import zmq
import zmq.asyncio

from . import protocol as P
from .config import check_socket_folder, default_endpoint


class EdgeAgentError(Exception):
    """The daemon answered a request with an `error` event."""

    def __init__(self, error: dict):
        super().__init__(f"{error.get('code')}: {error.get('message')}")
        self.code = error.get("code")
        self.message = error.get("message")
        self.details = error


def resolve_address(address: str | None) -> str:
    return address or os.environ.get("EDGE_AGENT_ADDRESS") or default_endpoint()


SEND_TIMEOUT_S = 5.0


def _chat_fields(prompt: str | None, messages: list[dict] | None, session: str | None, options: dict) -> dict:
    fields = {k: v for k, v in options.items() if v is not None}
    if session is not None:
        fields.update(session=session, message=prompt)
    elif messages is not None:
        fields["messages"] = messages
    else:
        fields["messages"] = [{"role": "user", "content": prompt}]
    return fields


def _present(**fields: Any) -> dict:
    return {k: v for k, v in fields.items() if v is not None}


def _terminal(event: dict) -> dict:
    if event["event"] == "error":
        raise EdgeAgentError(event["error"])
    return event


class AsyncClient:
    def __init__(self, address: str | None = None, timeout: float | None = 300.0, *,
                 curve_server_key: bytes | None = None, curve_client_cert: str | None = None):
        self.address = resolve_address(address)
        self.timeout = timeout
        self._curve = (curve_server_key, curve_client_cert)
        self._context = zmq.asyncio.Context.instance()
        self._ids = itertools.count(1)
        self._prefix = uuid.uuid4().hex[:8]
        self._queues: dict[str, asyncio.Queue] = {}  # request id -> its events not yet read
        self._abandoned: set[str] = set()  # requests whose late events are dropped
        self._waiting: set[str] = set()
        self._sock: zmq.asyncio.Socket | None = None
        self._reader: asyncio.Task | None = None
        self.last_result: dict | None = None

    async def __aenter__(self) -> AsyncClient:
        await self.open()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def open(self) -> None:
        check_socket_folder(self.address)  # UnsafeSocketPath: someone else's folder, maybe a fake daemon
        sock = self._context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        server_key, client_cert = self._curve
        if server_key:
            from zmq.auth import load_certificate

            public, secret = load_certificate(client_cert) if client_cert else zmq.curve_keypair()
            sock.curve_serverkey = server_key
            sock.curve_publickey = public
            sock.curve_secretkey = secret
        sock.connect(self.address)
        self._sock = sock
        self._reader = asyncio.ensure_future(self._read(sock))

    async def reconnect(self) -> None:
        """Drop the socket and connect a fresh one (events still on their way are lost)."""
        await self.close()
        await self.open()

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            self._reader = None
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def new_id(self) -> str:
        return f"{self._prefix}-{next(self._ids)}"

    # ---------------------------------------------------------------- plumbing

    async def _read(self, sock: zmq.asyncio.Socket) -> None:
        while True:
            frames = await sock.recv_multipart()
            if frames and frames[0] == b"":
                frames = frames[1:]
            event = P.decode_event(frames[0])
            if len(frames) > 1:
                event["attachments"] = frames[1:]
            rid = event.get("id")
            if rid is None:  # a message the daemon could not read: whoever waits hears of it
                for waiting in self._waiting:
                    self._queues[waiting].put_nowait(event)
            elif rid not in self._abandoned:
                self._queues.setdefault(rid, asyncio.Queue()).put_nowait(event)

    async def send(self, op: str, rid: str | None = None, attachments: tuple[bytes, ...] = (),
                   **fields: Any) -> str:
        """Send a request (header, then binary `attachments`); its events wait for next_event."""
        if self._sock is None:
            await self.open()
        rid = rid or self.new_id()
        self._abandoned.discard(rid)
        self._queues.setdefault(rid, asyncio.Queue())
        assert self._sock is not None
        try:
            await asyncio.wait_for(self._sock.send_multipart([P.encode_request(rid, op, **fields), *attachments]),
                                   SEND_TIMEOUT_S)
        except asyncio.TimeoutError:  # a DEALER with no live peer (daemon gone, CURVE refused) blocks
            self._queues.pop(rid, None)
            raise TimeoutError(f"cannot reach edge-agent at {self.address}: send timed out") from None
        return rid

    async def next_event(self, rid: str, timeout: float | None) -> dict:
        """The next event for request `rid`; events for other requests are kept for them."""
        queue = self._queues.setdefault(rid, asyncio.Queue())
        self._waiting.add(rid)
        try:
            event = await asyncio.wait_for(queue.get(), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"no answer from edge-agent at {self.address} within {timeout} s") from None
        finally:
            self._waiting.discard(rid)
        if event.get("final") and queue.empty():
            self._queues.pop(rid, None)
        return event

    async def events(self, op: str, timeout: float | None = None, rid: str | None = None,
                     attachments: tuple[bytes, ...] = (), **fields: Any) -> AsyncIterator[dict]:
        """Send a request and yield its events up to and including the terminal one. Pass
        `rid` to choose the request id (to cancel it)."""
        timeout = self.timeout if timeout is None else timeout
        rid = await self.send(op, rid=rid, attachments=attachments, **fields)
        finished = False
        try:
            while not finished:
                event = await self.next_event(rid, timeout)
                finished = bool(event.get("final"))
                yield event
        finally:
            if not finished:  # timed out, or the caller stopped iterating early
                await self._abandon(rid)

    async def _abandon(self, rid: str) -> None:
        """Stop waiting for `rid`: cancel it on the daemon and drop its late events."""
        self._abandoned.add(rid)
        self._queues.pop(rid, None)
        try:
            await self.send("cancel", target=rid)
        except TimeoutError:
            pass
        if not self._queues:  # nothing else in flight: start over with a fresh socket
            await self.reconnect()

    async def call(self, op: str, timeout: float | None = None, attachments: tuple[bytes, ...] = (),
                   **fields: Any) -> dict:
        """Send a request and return its result; raise EdgeAgentError for an error event."""
        async for event in self.events(op, timeout=timeout, attachments=attachments, **fields):
            if event.get("final"):
                self.last_result = _terminal(event)
                return event
        raise EdgeAgentError({"code": "internal", "message": "stream ended without a terminal event"})

    # ---------------------------------------------------------------- ops answered at once

    async def ping(self, timeout: float = 5.0) -> bool:
        return (await self.call("ping", timeout=timeout)).get("pong") is True

    async def describe(self) -> dict:
        return await self.call("describe")

    async def status(self) -> dict:
        return await self.call("status")

    async def cancel(self, target: str) -> dict:
        return await self.call("cancel", target=target)

    async def models(self, action: str = "list", name: str | None = None) -> dict:
        return await self.call("models", action=action, **_present(name=name))

    async def sessions(self, action: str, session: str | None = None, system: str | None = None, *,
                       all_clients: bool = False) -> dict:
        """`all_clients=True` with `reset`: wipe every client's sessions (admin)."""
        return await self.call("sessions", action=action,
                               **_present(session=session, system=system, all=True if all_clients else None))

    async def voices(self, language: str | None = None) -> dict:
        return await self.call("voices", **_present(language=language))

    async def speech(self, action: str, target: str | None = None, scope: str | None = None) -> dict:
        """stop | cancel | pause | resume: one request of this client (`target`), all of this
        client's speech (default), or everyone's (`scope="all"`, admin)."""
        return await self.call("speech", action=action, **_present(target=target, scope=scope))

    # ---------------------------------------------------------------- images

    async def ocr(self, image: bytes | None = None, engine: str = "fast", camera: str | None = None,
                  timeout: float | None = None, speak: bool | dict = False, crops: int | None = None,
                  keep_margins: bool = False, correct_words: bool = True) -> dict:
        """Text in an image (JPEG, PNG or WebP bytes) or a camera's newest frame, in reading
        order, with lines, blocks and boxes; `speak` (true or speech options) also reads it
        aloud; `crops` is the vision engine's crop budget; `keep_margins` keeps line and page
        numbers in the text; `correct_words` false leaves words misread by a look-alike letter
        as the recogniser read them."""
        return await self.call("ocr", timeout=timeout, attachments=(image,) if image is not None else (),
                               engine=engine, **_present(camera=camera, speak=speak or None, crops=crops,
                                                         keep_margins=keep_margins or None,
                                                         correct_words=None if correct_words else False))

    async def guide(self, image: bytes | None = None, camera: str | None = None,
                    timeout: float | None = None) -> dict:
        """Capture guidance for an image or a camera's newest frame: `good`, `cues`, details."""
        return await self.call("guide", timeout=timeout, attachments=(image,) if image is not None else (),
                               **_present(camera=camera))

    async def capture(self, camera: str, timeout: float | None = None) -> tuple[bytes, dict]:
        """The newest frame of a configured camera: (JPEG bytes, its description)."""
        result = await self.call("capture", timeout=timeout, camera=camera)
        return result["attachments"][0], result

    # ---------------------------------------------------------------- speech input

    def listen_events(self, audio: bytes | tuple[bytes, ...] = (), *, timeout: float | None = None,
                      rid: str | None = None, **options: Any) -> AsyncIterator[dict]:
        """Recognise the speech in `audio` (a WAV file, or raw PCM frames with format="pcm" and
        sample_rate), or with source="microphone" and no audio, what the daemon's microphone
        hears: events (listening,) speech_start, partial, speech_end, then the result or an
        error. Options: mode (dictation, commands, wake), commands, wake_phrase, format,
        sample_rate, source, wait_s, vad_mode, end_silence_ms, max_utterance_s, engine (auto,
        pocketsphinx, whisper), language (whisper)."""
        frames = (audio,) if isinstance(audio, bytes) else tuple(audio)
        return self.events("listen", timeout=timeout, rid=rid, attachments=frames, **_present(**options))

    async def listen(self, audio: bytes | tuple[bytes, ...] = (), *, timeout: float | None = None,
                     **options: Any) -> dict:
        """The first utterance in `audio` as text (see listen_events for the options)."""
        frames = (audio,) if isinstance(audio, bytes) else tuple(audio)
        return await self.call("listen", timeout=timeout, attachments=frames, **_present(**options))

    def assist_events(self, audio: bytes | tuple[bytes, ...] = (), *, timeout: float | None = None,
                      rid: str | None = None, **options: Any) -> AsyncIterator[dict]:
        """The hands-free loop once: wake phrase (or trigger="push"), a command, its spoken
        answer. From the daemon's microphone, or with source="client" from `audio` (a WAV file
        or PCM frames holding the wake phrase and the command). Events: the listen events with
        `stage`, wake, heard, the answer's delta/speech events, barge_in, then the result.
        Options: trigger, source, wake_phrase, wait_s, commands, camera, barge_in, speak,
        format, sample_rate."""
        frames = (audio,) if isinstance(audio, bytes) else tuple(audio)
        return self.events("assist", timeout=timeout, rid=rid, attachments=frames, **_present(**options))

    async def assist(self, audio: bytes | tuple[bytes, ...] = (), *, timeout: float | None = None,
                     **options: Any) -> dict:
        """The result of one assist (see assist_events)."""
        frames = (audio,) if isinstance(audio, bytes) else tuple(audio)
        return await self.call("assist", timeout=timeout, attachments=frames, **_present(**options))

    def ask_events(self, question: str, images: tuple[bytes, ...] = (), *, session: str | None = None,
                   camera: str | None = None, timeout: float | None = None, rid: str | None = None,
                   **options: Any) -> AsyncIterator[dict]:
        """A question about images (or a camera's newest frame, or a session's images): events."""
        return self.events("ask", timeout=timeout, rid=rid, attachments=tuple(images), question=question,
                           **_present(session=session, camera=camera, **options))

    # ---------------------------------------------------------------- chat and speech

    def chat_events(self, prompt: str | None = None, *, messages: list[dict] | None = None,
                    session: str | None = None, timeout: float | None = None, rid: str | None = None,
                    **options: Any) -> AsyncIterator[dict]:
        """Every event of a chat request: accepted, progress, deltas, then the result or error."""
        return self.events("chat", timeout=timeout, rid=rid, **_chat_fields(prompt, messages, session, options))

    async def chat(self, prompt: str | None = None, *, messages: list[dict] | None = None,
                   session: str | None = None, timeout: float | None = None, rid: str | None = None,
                   **options: Any) -> AsyncIterator[str]:
        """Yield the answer's text as it streams; the final event is kept in `last_result`."""
        async for event in self.chat_events(prompt, messages=messages, session=session, timeout=timeout, rid=rid,
                                            **options):
            if event["event"] == "delta" and event.get("text"):
                yield event["text"]
            elif event.get("final"):
                self.last_result = _terminal(event)

    def say_events(self, text: str, *, timeout: float | None = None, rid: str | None = None,
                   **options: Any) -> AsyncIterator[dict]:
        """Speak `text` (options: priority, output, format, voice, language, rate, pitch, volume,
        punctuation, markdown): `speech` and `audio` events, then the end (`result`) or `error`."""
        return self.events("say", timeout=timeout, rid=rid, text=text, **_present(**options))

    async def say(self, text: str, *, timeout: float | None = None, **options: Any) -> dict:
        """Speak `text` and wait until it has been spoken; the result has the timings and, for
        client output, `audio`: the list of audio events (each with its bytes under `data`)."""
        audio = []
        async for event in self.say_events(text, timeout=timeout, **options):
            if event["event"] == "audio":
                audio.append({**event, "data": event.pop("attachments")[0]})
            elif event.get("final"):
                self.last_result = {**_terminal(event), "audio": audio}
                return self.last_result
        raise EdgeAgentError({"code": "internal", "message": "stream ended without a terminal event"})


# AsyncClient's operations as Client offers them: coroutines become calls, async iterators iterators
COROUTINES = ("send", "next_event", "call", "reconnect", "ping", "describe", "status", "cancel", "models",
              "sessions", "voices", "speech", "ocr", "guide", "capture", "say", "listen", "assist")
ITERATORS = ("events", "ask_events", "chat_events", "chat", "say_events", "listen_events", "assist_events")


class Client:
    """The blocking client: AsyncClient's operations, run on a private event loop thread."""

    if TYPE_CHECKING:  # made below from AsyncClient's methods, which a type checker cannot follow
        send: Callable[..., str]
        next_event: Callable[..., dict]
        call: Callable[..., dict]
        reconnect: Callable[[], None]
        ping: Callable[..., bool]
        describe: Callable[[], dict]
        status: Callable[[], dict]
        cancel: Callable[[str], dict]
        models: Callable[..., dict]
        sessions: Callable[..., dict]
        voices: Callable[..., dict]
        speech: Callable[..., dict]
        ocr: Callable[..., dict]
        guide: Callable[..., dict]
        capture: Callable[..., tuple[bytes, dict]]
        say: Callable[..., dict]
        listen: Callable[..., dict]
        assist: Callable[..., dict]
        events: Callable[..., Iterator[dict]]
        ask_events: Callable[..., Iterator[dict]]
        chat_events: Callable[..., Iterator[dict]]
        chat: Callable[..., Iterator[str]]
        say_events: Callable[..., Iterator[dict]]
        listen_events: Callable[..., Iterator[dict]]
        assist_events: Callable[..., Iterator[dict]]

    def __init__(self, address: str | None = None, timeout: float | None = 300.0, *,
                 curve_server_key: bytes | None = None, curve_client_cert: str | None = None):
        self._async = AsyncClient(address, timeout, curve_server_key=curve_server_key,
                                  curve_client_cert=curve_client_cert)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="edge-agent-client", daemon=True)
        self._thread.start()
        try:
            self._run(self._async.open())
        except BaseException:
            self.close()
            raise

    @property
    def address(self) -> str:
        return self._async.address

    @property
    def timeout(self) -> float | None:
        return self._async.timeout

    @property
    def last_result(self) -> dict | None:
        return self._async.last_result

    def new_id(self) -> str:
        return self._async.new_id()

    def _run(self, coroutine) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def _iterate(self, iterator: AsyncGenerator) -> Iterator:
        finished = False
        try:
            while True:
                try:
                    item = self._run(iterator.__anext__())
                except StopAsyncIteration:
                    finished = True
                    return
                yield item
        finally:
            if not finished and self._loop.is_running():
                self._run(iterator.aclose())  # cancels the request on the daemon

    def close(self) -> None:
        if self._loop.is_running():
            self._run(self._async.close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            self._loop.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _blocking(name: str, iterator: bool) -> Callable:
    original = getattr(AsyncClient, name)

    @functools.wraps(original)
    def method(self: Client, *args: Any, **kwargs: Any) -> Any:
        produced = getattr(self._async, name)(*args, **kwargs)
        return self._iterate(produced) if iterator else self._run(produced)

    return method


for _name in COROUTINES:
    setattr(Client, _name, _blocking(_name, iterator=False))
for _name in ITERATORS:
    setattr(Client, _name, _blocking(_name, iterator=True))
