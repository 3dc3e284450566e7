"""Python clients for the edge-agent daemon: `Client` (blocking) and `AsyncClient` (asyncio).

Both speak protocol v1 (docs/protocol.md) over one DEALER socket that may carry several
requests at once; events are routed to each request by id.

    with Client() as agent:
        for piece in agent.chat("Read me the label", system="Be brief"):
            print(piece, end="", flush=True)
        print(agent.last_result["usage"])

The address comes from the argument, else $EDGE_AGENT_ADDRESS, else the default IPC socket.
A request that times out is cancelled on the daemon and raises TimeoutError; after a timeout
the socket is recreated (ZeroMQ itself reconnects to a restarted daemon), so one lost reply
does not leave stale events behind for the next call.
"""
from __future__ import annotations

import asyncio
import collections
import itertools
import os
import time
import uuid
from typing import Any, AsyncIterator, Iterator

import zmq
import zmq.asyncio

from . import protocol as P
from .config import default_endpoint


class EdgeAgentError(Exception):
    """The daemon answered a request with an `error` event."""

    def __init__(self, error: dict):
        super().__init__(f"{error.get('code')}: {error.get('message')}")
        self.code = error.get("code")
        self.message = error.get("message")
        self.details = error


def resolve_address(address: str | None) -> str:
    return address or os.environ.get("EDGE_AGENT_ADDRESS") or default_endpoint()


SEND_TIMEOUT_MS = 5000


def _configure(sock: zmq.Socket, curve_server_key: bytes | None, curve_client_cert: str | None) -> None:
    sock.setsockopt(zmq.LINGER, 0)
    # a DEALER with no live peer (daemon gone, CURVE handshake refused) blocks on send
    sock.setsockopt(zmq.SNDTIMEO, SEND_TIMEOUT_MS)
    if curve_server_key:
        from zmq.auth import load_certificate

        public, secret = load_certificate(curve_client_cert) if curve_client_cert else zmq.curve_keypair()
        sock.curve_serverkey = curve_server_key
        sock.curve_publickey = public
        sock.curve_secretkey = secret


def _chat_fields(prompt: str | None, messages: list[dict] | None, session: str | None, options: dict) -> dict:
    fields = {k: v for k, v in options.items() if v is not None}
    if session is not None:
        fields.update(session=session, message=prompt)
    elif messages is not None:
        fields["messages"] = messages
    else:
        fields["messages"] = [{"role": "user", "content": prompt}]
    return fields


class Client:
    def __init__(self, address: str | None = None, timeout: float | None = 300.0, *,
                 curve_server_key: bytes | None = None, curve_client_cert: str | None = None):
        self.address = resolve_address(address)
        self.timeout = timeout
        self._curve = (curve_server_key, curve_client_cert)
        self._context = zmq.Context.instance()
        self._ids = itertools.count(1)
        self._prefix = uuid.uuid4().hex[:8]
        self._buffered: dict[str, collections.deque] = collections.defaultdict(collections.deque)
        self._sock: zmq.Socket | None = None
        self.last_result: dict | None = None
        self._open()

    def _open(self) -> None:
        self._sock = self._context.socket(zmq.DEALER)
        _configure(self._sock, *self._curve)
        self._sock.connect(self.address)

    def reconnect(self) -> None:
        """Drop the socket (and any stale events) and connect a fresh one."""
        if self._sock is not None:
            self._sock.close(linger=0)
        self._buffered.clear()
        self._open()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def new_id(self) -> str:
        return f"{self._prefix}-{next(self._ids)}"

    # ---------------------------------------------------------------- plumbing

    def send(self, op: str, rid: str | None = None, attachments: tuple[bytes, ...] = (), **fields: Any) -> str:
        rid = rid or self.new_id()
        try:
            self._sock.send_multipart([P.encode_request(rid, op, **fields), *attachments])
        except zmq.Again:
            raise TimeoutError(f"cannot reach edge-agent at {self.address}: send timed out") from None
        return rid

    def next_event(self, rid: str, timeout: float | None) -> dict:
        """The next event for request `rid`; events for other requests are kept for them."""
        if self._buffered.get(rid):
            return self._buffered[rid].popleft()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._sock.poll(None if wait is None else int(wait * 1000)):
                raise TimeoutError(f"no answer from edge-agent at {self.address} within {timeout} s")
            frames = self._sock.recv_multipart()
            if frames and frames[0] == b"":
                frames = frames[1:]
            event = P.decode_event(frames[0])
            if len(frames) > 1:
                event["attachments"] = frames[1:]
            if event.get("id") == rid or event.get("id") is None:
                return event
            self._buffered[event["id"]].append(event)

    def events(self, op: str, timeout: float | None = None, rid: str | None = None,
               attachments: tuple[bytes, ...] = (), **fields: Any) -> Iterator[dict]:
        """Send a request (header, then binary `attachments`) and yield its events up to and
        including the terminal one. Pass `rid` to choose the request id (to cancel it)."""
        timeout = self.timeout if timeout is None else timeout
        rid = self.send(op, rid=rid, attachments=attachments, **fields)
        finished = False
        try:
            while not finished:
                event = self.next_event(rid, timeout)
                finished = bool(event.get("final"))
                yield event
        finally:
            if not finished:  # timed out, or the caller stopped iterating early
                self._abandon(rid)

    def _abandon(self, rid: str) -> None:
        """Stop waiting for `rid`: cancel it on the daemon and start over with a fresh socket."""
        try:
            self.send("cancel", target=rid)
        except (TimeoutError, zmq.ZMQError):
            pass
        self.reconnect()

    def call(self, op: str, timeout: float | None = None, attachments: tuple[bytes, ...] = (),
             **fields: Any) -> dict:
        """Send a request and return its result; raise EdgeAgentError for an error event."""
        for event in self.events(op, timeout=timeout, attachments=attachments, **fields):
            if event.get("final"):
                if event["event"] == "error":
                    raise EdgeAgentError(event["error"])
                self.last_result = event
                return event
        raise EdgeAgentError({"code": "internal", "message": "stream ended without a terminal event"})

    # ---------------------------------------------------------------- ops

    def ping(self, timeout: float = 5.0) -> bool:
        return self.call("ping", timeout=timeout).get("pong") is True

    def describe(self) -> dict:
        return self.call("describe")

    def status(self) -> dict:
        return self.call("status")

    def models(self, action: str = "list", name: str | None = None) -> dict:
        return self.call("models", action=action, **({"name": name} if name else {}))

    def sessions(self, action: str, session: str | None = None, system: str | None = None) -> dict:
        fields = {k: v for k, v in {"session": session, "system": system}.items() if v is not None}
        return self.call("sessions", action=action, **fields)

    def cancel(self, target: str) -> dict:
        return self.call("cancel", target=target)

    def ocr(self, image: bytes | None = None, engine: str = "fast", camera: str | None = None,
            timeout: float | None = None, speak: bool | dict = False) -> dict:
        """Text in an image (JPEG, PNG or WebP bytes) or a camera's newest frame, in reading
        order, with lines and boxes; `speak` (true or speech options) also reads it aloud."""
        fields = {"engine": engine, **({"camera": camera} if camera else {}), **({"speak": speak} if speak else {})}
        return self.call("ocr", timeout=timeout, attachments=(image,) if image is not None else (), **fields)

    def ask_events(self, question: str, images: tuple[bytes, ...] = (), *, session: str | None = None,
                   camera: str | None = None, timeout: float | None = None, **options: Any) -> Iterator[dict]:
        """A question about images (or a camera's newest frame, or a session's images): events."""
        fields = {k: v for k, v in {"session": session, "camera": camera, **options}.items() if v is not None}
        return self.events("ask", timeout=timeout, attachments=tuple(images), question=question, **fields)

    def guide(self, image: bytes | None = None, camera: str | None = None, timeout: float | None = None) -> dict:
        """Capture guidance for an image or a camera's newest frame: `good`, `cues`, details."""
        return self.call("guide", timeout=timeout, attachments=(image,) if image is not None else (),
                         **({"camera": camera} if camera else {}))

    def capture(self, camera: str, timeout: float | None = None) -> tuple[bytes, dict]:
        """The newest frame of a configured camera: (JPEG bytes, its description)."""
        result = self.call("capture", timeout=timeout, camera=camera)
        return result["attachments"][0], result

    def say_events(self, text: str, *, timeout: float | None = None, rid: str | None = None,
                   **options: Any) -> Iterator[dict]:
        """Speak `text` (options: priority, output, format, voice, language, rate, pitch, volume,
        punctuation, markdown): `speech` and `audio` events, then the end (`result`) or `error`."""
        fields = {k: v for k, v in options.items() if v is not None}
        return self.events("say", timeout=timeout, rid=rid, text=text, **fields)

    def say(self, text: str, *, timeout: float | None = None, **options: Any) -> dict:
        """Speak `text` and wait until it has been spoken; the result has the timings and, for
        client output, `audio`: the list of audio events (each with its bytes under `data`)."""
        audio = []
        for event in self.say_events(text, timeout=timeout, **options):
            if event["event"] == "audio":
                audio.append({**event, "data": event.pop("attachments")[0]})
            elif event["event"] == "error":
                raise EdgeAgentError(event["error"])
            elif event["event"] == "result":
                self.last_result = {**event, "audio": audio}
                return self.last_result
        raise EdgeAgentError({"code": "internal", "message": "stream ended without a terminal event"})

    def voices(self, language: str | None = None) -> dict:
        return self.call("voices", **({"language": language} if language else {}))

    def speech(self, action: str, target: str | None = None, scope: str | None = None) -> dict:
        """stop | cancel | pause | resume: one request of this client (`target`), all of this
        client's speech (default), or everyone's (`scope="all"`, admin)."""
        fields = {k: v for k, v in {"target": target, "scope": scope}.items() if v is not None}
        return self.call("speech", action=action, **fields)

    def chat_events(self, prompt: str | None = None, *, messages: list[dict] | None = None,
                    session: str | None = None, timeout: float | None = None, rid: str | None = None,
                    **options: Any) -> Iterator[dict]:
        return self.events("chat", timeout=timeout, rid=rid, **_chat_fields(prompt, messages, session, options))

    def chat(self, prompt: str | None = None, *, messages: list[dict] | None = None, session: str | None = None,
             timeout: float | None = None, **options: Any) -> Iterator[str]:
        """Yield the answer's text as it streams; the final event is kept in `last_result`."""
        for event in self.chat_events(prompt, messages=messages, session=session, timeout=timeout, **options):
            if event["event"] == "delta" and event.get("text"):
                yield event["text"]
            elif event["event"] == "error":
                raise EdgeAgentError(event["error"])
            elif event["event"] == "result":
                self.last_result = event


class AsyncClient:
    """The asyncio client: the same operations, with a reader task routing events by id."""

    def __init__(self, address: str | None = None, timeout: float | None = 300.0, *,
                 curve_server_key: bytes | None = None, curve_client_cert: str | None = None):
        self.address = resolve_address(address)
        self.timeout = timeout
        self._curve = (curve_server_key, curve_client_cert)
        self._context = zmq.asyncio.Context.instance()
        self._ids = itertools.count(1)
        self._prefix = uuid.uuid4().hex[:8]
        self._queues: dict[str, asyncio.Queue] = {}
        self._sock: zmq.asyncio.Socket | None = None
        self._reader: asyncio.Task | None = None

    async def __aenter__(self) -> "AsyncClient":
        self._open()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def _open(self) -> None:
        self._sock = self._context.socket(zmq.DEALER)
        _configure(self._sock, *self._curve)
        self._sock.connect(self.address)
        self._reader = asyncio.ensure_future(self._read(self._sock))

    async def reconnect(self) -> None:
        await self.close()
        self._open()

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            self._reader = None
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    async def _read(self, sock: zmq.asyncio.Socket) -> None:
        while True:
            frames = await sock.recv_multipart()
            if frames and frames[0] == b"":
                frames = frames[1:]
            event = P.decode_event(frames[0])
            queue = self._queues.get(event.get("id"))
            if queue is not None:
                queue.put_nowait(event)

    def new_id(self) -> str:
        return f"{self._prefix}-{next(self._ids)}"

    async def events(self, op: str, timeout: float | None = None, rid: str | None = None,
                     **fields: Any) -> AsyncIterator[dict]:
        if self._sock is None:
            self._open()
        timeout = self.timeout if timeout is None else timeout
        rid = rid or self.new_id()
        queue: asyncio.Queue = asyncio.Queue()
        self._queues[rid] = queue
        try:
            await asyncio.wait_for(self._sock.send_multipart([P.encode_request(rid, op, **fields)]),
                                   SEND_TIMEOUT_MS / 1000)
        except asyncio.TimeoutError:
            self._queues.pop(rid, None)
            raise TimeoutError(f"cannot reach edge-agent at {self.address}: send timed out") from None
        try:
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), timeout)
                except asyncio.TimeoutError:
                    await self._sock.send_multipart([P.encode_request(self.new_id(), "cancel", target=rid)])
                    raise TimeoutError(f"no answer from edge-agent at {self.address} within {timeout} s") from None
                yield event
                if event.get("final"):
                    return
        finally:
            self._queues.pop(rid, None)

    async def call(self, op: str, timeout: float | None = None, **fields: Any) -> dict:
        async for event in self.events(op, timeout=timeout, **fields):
            if event.get("final"):
                if event["event"] == "error":
                    raise EdgeAgentError(event["error"])
                return event
        raise EdgeAgentError({"code": "internal", "message": "stream ended without a terminal event"})

    async def ping(self, timeout: float = 5.0) -> bool:
        return (await self.call("ping", timeout=timeout)).get("pong") is True

    async def status(self) -> dict:
        return await self.call("status")

    async def describe(self) -> dict:
        return await self.call("describe")

    async def cancel(self, target: str) -> dict:
        return await self.call("cancel", target=target)

    async def chat(self, prompt: str | None = None, *, messages: list[dict] | None = None,
                   session: str | None = None, timeout: float | None = None, rid: str | None = None,
                   **options: Any) -> AsyncIterator[dict]:
        """Yield every event of a chat request (deltas, then the result); raise on error."""
        async for event in self.events("chat", timeout=timeout, rid=rid,
                                       **_chat_fields(prompt, messages, session, options)):
            if event["event"] == "error":
                raise EdgeAgentError(event["error"])
            yield event
