"""The daemon's ZeroMQ side: one ROUTER socket per configured endpoint, CURVE where asked,
the clients seen on them, and non-blocking sends.

One socket per endpoint, so CURVE can guard a TCP endpoint while the IPC socket relies on
file permissions. A send that fails because the client is gone marks it gone and tells the
server, which cancels its requests; events a slow client cannot take yet wait in its outbox
(outbox.py), counted in bytes.
"""
from __future__ import annotations

import logging
import os
import socket
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

from .config import Config, admin_endpoint, admin_uids, check_socket_folder, is_loopback_endpoint
from .outbox import Backlog, Outbox, Sent

log = logging.getLogger("edge_agent.server")

HARD_MAX_FRAME = 64 << 20

# ZeroMQ counts a peer's queue in messages, not bytes: keep it short, so that what a slow client
# has not taken waits in its outbox, where it is counted in bytes (outbox.py). A reading client
# hardly notices: the I/O thread moves messages on to the kernel as they come. (Measured with
# bench/soak.py's flood: at 32, a reading client's events stayed stuck in libzmq 4.3.5 with the
# kernel queues empty in 2 of 4 runs; at 8, never in 7 runs. Do not raise it without that check.)
SEND_HWM = 8


@dataclass
class Listener:
    endpoint: str
    sock: zmq.asyncio.Socket
    admin: bool  # the admin socket beside an IPC endpoint (its users were checked by the kernel)
    curve: bool


@dataclass
class Client:
    key: tuple[int, bytes]  # (listener index, ZeroMQ routing id)
    envelope: bool = False
    gone: bool = False  # a send failed: its requests are being cancelled
    inflight: dict[str, str] = field(default_factory=dict)  # request id -> job id
    last_seen: float = field(default_factory=time.monotonic)
    curve_key: str | None = None  # the client's CURVE public key (Z85), on a CURVE endpoint
    outbox: Outbox = field(default_factory=Outbox)  # events it has not taken yet
    overrun: bool = False  # it left too much unread: its requests in flight are being ended

    @property
    def name(self) -> str:
        return f"{self.key[0]}:{self.key[1].hex()}"

    @property
    def owner(self) -> str:
        """Who owns what this client makes (sessions): its CURVE key, else its connection."""
        return f"key:{self.curve_key}" if self.curve_key else f"conn:{self.name}"


class Sockets:
    def __init__(self, config: Config, context: zmq.asyncio.Context, on_gone: Callable[[Client], None],
                 on_overrun: Callable[[Client, list[str]], None], on_drained: Callable[[], None]):
        self.config = config
        self.context = context
        self.on_gone = on_gone
        self.backlog = Backlog(per_client=config.server.max_unread_bytes, total=config.server.max_unread_bytes_total,
                               send_now=self._send_now, on_overrun=on_overrun, on_drained=on_drained)
        self.listeners: list[Listener] = []
        self.clients: dict[tuple[int, bytes], Client] = {}
        self._authenticator: Any = None  # zmq.auth.asyncio.AsyncioAuthenticator, with CURVE
        self._allowed_keys: set[str] = set()  # Z85 public keys in authorized_clients_dir
        self._curve_stamp: tuple = ()

    def bind(self) -> None:
        for endpoint in self.config.server.endpoints:
            self._bind(endpoint, admin=False)
            admin = admin_endpoint(endpoint)
            if admin is not None:
                self._bind(admin, admin=True)

    def _bind(self, endpoint: str, admin: bool) -> None:
        sock = self.context.socket(zmq.ROUTER)
        try:
            self._listen(sock, endpoint, admin)
        except BaseException:
            sock.close(linger=0)  # an open socket would keep the context (and the daemon's exit) waiting
            raise

    def _listen(self, sock: zmq.asyncio.Socket, endpoint: str, admin: bool) -> None:
        curve_cfg = self.config.server.curve
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # unroutable replies raise: the client is gone
        # a frame over the hard cap disconnects its sender before it is read in; smaller ones are
        # refused with `too_large` once the message is complete (server.py, without copying it)
        sock.setsockopt(zmq.MAXMSGSIZE, max(HARD_MAX_FRAME, self.config.server.max_message_bytes))
        sock.setsockopt(zmq.SNDHWM, SEND_HWM)
        sock.setsockopt(zmq.LINGER, int(self.config.server.shutdown_grace_s * 1000))
        use_curve = curve_cfg.enabled and endpoint.startswith("tcp://")
        if use_curve:
            self._start_authenticator()
            from zmq.auth import load_certificate

            public, secret = load_certificate(curve_cfg.server_secret_file)
            if secret is None:
                raise RuntimeError(f"{curve_cfg.server_secret_file} holds no secret key")
            sock.curve_secretkey = secret
            sock.curve_publickey = public
            sock.curve_server = True
        if admin:  # the kernel's peer credentials: only these users get a connection at all
            for uid in admin_uids(self.config.server):
                sock.setsockopt(zmq.IPC_FILTER_UID, uid)
        if endpoint.startswith("ipc://"):
            path = Path(endpoint[len("ipc://"):])
            check_socket_folder(endpoint)  # before trusting a folder that may already exist
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            check_socket_folder(endpoint)
            if path.exists() and stat.S_ISSOCK(path.stat().st_mode):
                if _socket_is_live(path):
                    raise RuntimeError(f"another daemon is already serving {endpoint}")
                path.unlink()  # left by a daemon that was killed
        listener = Listener(endpoint, sock, admin=admin, curve=use_curve)
        try:
            self.rebind(listener)
        except zmq.ZMQError as exc:
            raise RuntimeError(f"cannot listen on {endpoint}: {exc}") from None
        self.listeners.append(listener)
        log.info("listening on %s%s%s", endpoint, " (CURVE)" if use_curve else "", " (admin)" if admin else "")
        if not use_curve and not is_loopback_endpoint(endpoint):
            raise RuntimeError(f"refusing to serve {endpoint} without CURVE")  # validate() prevents this

    @staticmethod
    def rebind(listener: Listener) -> None:
        """Listen on the endpoint (again, after the connection guard paused it)."""
        listener.sock.bind(listener.endpoint)
        if listener.endpoint.startswith("ipc://"):
            os.chmod(listener.endpoint[len("ipc://"):], 0o660)

    def _start_authenticator(self) -> None:
        if self._authenticator is not None:
            return
        from zmq.auth.asyncio import AsyncioAuthenticator

        self._authenticator = AsyncioAuthenticator(self.context)
        self._authenticator.start()
        self.reload_curve_clients()

    def reload_curve_clients(self) -> bool:
        """Read the folder of allowed client certificates again, if it changed (or `force`):
        new handshakes use the new list at once, and clients whose certificate was removed are
        refused from their next request on (see `revoked`). True if it was reloaded."""
        folder = Path(self.config.server.curve.authorized_clients_dir)
        try:
            stamp = tuple(sorted((p.name, p.stat().st_mtime_ns) for p in folder.iterdir()))
        except OSError:
            stamp = ()
        if self._authenticator is None or stamp == self._curve_stamp:
            return False
        from zmq.auth import load_certificates

        self._authenticator.configure_curve(domain="*", location=str(folder))
        try:
            self._allowed_keys = {key.decode() for key in load_certificates(folder)}
        except OSError:
            self._allowed_keys = set()
        self._curve_stamp = stamp
        log.info("CURVE: %d allowed client certificate(s) in %s", len(self._allowed_keys), folder)
        return True

    def revoked(self, client: Client) -> bool:
        """A CURVE client whose certificate is no longer in the allowed folder."""
        return client.curve_key is not None and client.curve_key not in self._allowed_keys

    def client(self, index: int, identity: bytes, parts: list[bytes]) -> tuple[Client, list[bytes]]:
        """The client a message came from (a peer that comes back with the same identity after
        it was gone starts afresh), and the message without its envelope delimiter."""
        key = (index, identity)
        client = self.clients.get(key)
        if client is None or client.gone:
            if client is not None:
                self.backlog.discard(client)
            client = Client(key)
        client.envelope = bool(parts) and parts[0] == b""
        if client.envelope:
            parts = parts[1:]
        client.last_seen = time.monotonic()
        self.clients[key] = client
        return client, parts

    def forget_idle(self, idle_s: float) -> int:
        """Drop clients with nothing in flight that sent nothing for `idle_s`; how many went."""
        cutoff = time.monotonic() - idle_s
        idle = [key for key, c in self.clients.items() if not c.inflight and c.last_seen < cutoff]
        for key in idle:
            self.backlog.discard(self.clients.pop(key))  # what it never read goes with it
        return len(idle)

    def send(self, client: Client, frames: list[bytes], rid: str | None = None, final: bool = True) -> bool:
        """Send now, or keep for the client in its outbox (behind what already waits there).
        `rid` and `final` say which request the message ends, for an overrun. False: gone."""
        if client.gone:
            return False
        if not client.outbox:
            outcome = self._send_now(client, frames)
            if outcome is not Sent.FULL:
                return outcome is Sent.SENT
        self.backlog.hold(client, frames, rid, final)
        return True

    def paused(self, name: str) -> bool:
        """Whether the client of this name has so much unread that producers should wait."""
        return any(c.name == name and self.backlog.paused(c) for c in self.clients.values())

    def _send_now(self, client: Client, frames: list[bytes]) -> Sent:
        if client.gone:
            return Sent.GONE
        listener = self.listeners[client.key[0]]
        envelope = [b""] if client.envelope else []
        message = [client.key[1], *envelope, *frames]
        future: Any = listener.sock.send_multipart(message, flags=zmq.NOBLOCK)
        exc = future.exception() if future.done() else None
        if isinstance(exc, zmq.Again):
            # ZeroMQ learns that the I/O thread emptied the queue from commands it reads lazily
            # (at most every millisecond or so); reading the socket's EVENTS takes them in now
            listener.sock.getsockopt(zmq.EVENTS)
            future = listener.sock.send_multipart(message, flags=zmq.NOBLOCK)
            exc = future.exception() if future.done() else None
        if exc is None:
            return Sent.SENT
        if isinstance(exc, zmq.Again):
            return Sent.FULL
        log.log(logging.WARNING if client.inflight else logging.DEBUG,
                "client %s unreachable (%s): cancelling its %d request(s)", client.name, exc, len(client.inflight))
        client.gone = True
        self.backlog.discard(client)
        self.on_gone(client)
        return Sent.GONE

    def close(self) -> None:
        self.backlog.close()
        for listener in self.listeners:
            listener.sock.close()  # LINGER lets the final events reach their clients
            if listener.endpoint.startswith("ipc://"):
                Path(listener.endpoint[len("ipc://"):]).unlink(missing_ok=True)
        if self._authenticator is not None:
            self._authenticator.stop()


def _socket_is_live(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True
