"""Soak: a daemon under a bounded storm of what hostile or broken clients send, while a
well-behaved client keeps pinging it.

    python bench/soak.py [--malformed 100000] [--cycles 10000] [--cancels 2000] [--slow-readers 4]

Phases, one after the other, against one real daemon (the tiny fixture, exported on the fly):
1. malformed: messages from 4 sockets: garbage bytes, bad JSON, deep nesting, lone surrogates,
   unknown ops and fields, wrong types, frames where none belong; every one must be answered;
2. churn: connect, ping, close, again and again (a fresh DEALER socket each time);
3. cancel floods: chat and OCR requests cancelled right after `accepted`;
4. slow readers: clients that ask for client-side speech audio and read none of it (raw
   sockets with a receive queue of one message): daemon RSS and unread bytes at their peak.
Throughout, a pinger measures `ping` round trips every 20 ms (p50/p99/max per phase). After
each phase: daemon RSS (daemon alone and with its engines), engine restarts, whether the
daemon is alive. Writes bench/results/soak.json with the machine's CPU model.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import RESULTS, machine, tiny_chat_package, write_result  # noqa: E402


def malformed(n: int) -> list[bytes]:
    good = {"v": 1, "id": f"m{n}", "op": "ping"}
    kinds = [
        lambda: bytes(random.getrandbits(8) for _ in range(random.randint(1, 64))),
        lambda: b'{"v": 1, "id": "x", "op": ',
        lambda: b'{"v":1,"id":"deep","op":"ping","x":' + b"[" * 3000 + b"]" * 3000 + b"}",
        lambda: b'{"v": 1, "id": "\\ud800", "op": "ping"}',
        lambda: json.dumps({**good, "op": "explode"}).encode(),
        lambda: json.dumps({**good, "nonsense\n": 1}).encode(),
        lambda: json.dumps({**good, "op": "chat", "messages": "not a list"}).encode(),
        lambda: json.dumps({**good, "v": True}).encode(),
        lambda: json.dumps({**good, "op": "chat", "messages": [{"role": "user", "content": "x"}],
                            "top_k": 2**62}).encode(),
    ]
    return [random.choice(kinds)()]


class Pinger(threading.Thread):
    def __init__(self, address: str):
        super().__init__(daemon=True)
        from edge_agent.client import Client

        self.client = Client(address, timeout=30)
        self.samples: list[float] = []
        self.failures = 0
        self.running = True

    def run(self) -> None:
        while self.running:
            start = time.perf_counter()
            try:
                self.client.ping(timeout=10)
                self.samples.append((time.perf_counter() - start) * 1000)
            except TimeoutError:
                self.failures += 1
            time.sleep(0.02)

    def take(self) -> dict:
        samples, self.samples = sorted(self.samples), []
        failures, self.failures = self.failures, 0
        if not samples:
            return {"pings": 0, "failures": failures}
        return {"pings": len(samples), "failures": failures, "p50_ms": round(statistics.median(samples), 2),
                "p99_ms": round(samples[int(len(samples) * 0.99) - 1 if len(samples) > 1 else 0], 2),
                "max_ms": round(samples[-1], 2)}


def state(daemon, client) -> dict:
    status = client.status()
    return {"alive": daemon.process.poll() is None, "daemon_rss_mb": round(status["daemon_rss_bytes"] / 2**20, 1),
            "rss_mb": round(status["rss_bytes"] / 2**20, 1), "clients": status["clients"],
            "restarts": {name: e["restarts"] for name, e in status["engines"].items()}}


def phase_malformed(address: str, total: int) -> dict:
    import zmq

    sockets = [zmq.Context.instance().socket(zmq.DEALER) for _ in range(4)]
    for sock in sockets:
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(address)
    start, answered, window = time.perf_counter(), 0, 200
    for sent in range(total):
        sock = sockets[sent % 4]
        frames = malformed(sent)
        if sent % 50 == 0:  # frames after the header of an op that takes none
            frames = [json.dumps({"v": 1, "id": f"f{sent}", "op": "ping"}).encode(), b"extra"]
        sock.send_multipart(frames)
        if sent % window == window - 1:  # read what was answered so far: keep the daemon's queue short
            for s in sockets:
                while s.poll(0):
                    s.recv_multipart()
                    answered += 1
    deadline = time.monotonic() + 60
    while answered < total and time.monotonic() < deadline:
        for s in sockets:
            if s.poll(50):
                s.recv_multipart()
                answered += 1
    seconds = time.perf_counter() - start
    for sock in sockets:
        sock.close()
    return {"sent": total, "answered": answered, "seconds": round(seconds, 1),
            "per_second": round(total / seconds)}


def phase_churn(address: str, cycles: int) -> dict:
    import zmq

    from edge_agent import protocol as P

    start, answered = time.perf_counter(), 0
    for n in range(cycles):
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(address)
        sock.send(P.encode_request(f"c{n}", "ping"))
        if sock.poll(5000):
            sock.recv_multipart()
            answered += 1
        sock.close()
    return {"cycles": cycles, "answered": answered, "seconds": round(time.perf_counter() - start, 1)}


def phase_cancels(address: str, count: int, page: bytes) -> dict:
    from edge_agent.client import Client

    start = time.perf_counter()
    with Client(address, timeout=60) as c:
        for n in range(count):
            if n % 2:
                rid = c.send("ocr", attachments=(page,))
            else:
                rid = c.send("chat", messages=[{"role": "user", "content": "go on"}], max_tokens=500)
            c.next_event(rid, 30)  # accepted
            c.cancel(rid)
            event = c.next_event(rid, 30)
            while not event["final"]:
                event = c.next_event(rid, 30)
        after_flood = time.perf_counter()
        c.ocr(page)
        victim_ocr_s = time.perf_counter() - after_flood
    return {"requests": count, "seconds": round(after_flood - start, 1),
            "ocr_right_after_s": round(victim_ocr_s, 2)}


def phase_slow_readers(address: str, readers: int, observer) -> dict:
    """Raw sockets with the smallest receive queues ZeroMQ and the kernel allow, that ask for
    client-side speech audio (about 20 minutes of it each) and read none of it."""
    import zmq

    from edge_agent import protocol as P

    sockets = []
    for _ in range(readers):
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, 1)
        sock.setsockopt(zmq.RCVBUF, 4096)
        sock.connect(address)
        sockets.append(sock)
    text = ("This sentence is read aloud for a client that never reads its audio. " * 300)[:P.MAX_SAY_CHARS]
    before = observer.status()
    for n, sock in enumerate(sockets):
        for k in range(3):
            sock.send(P.encode_request(f"slow-{n}-{k}", "say", text=text, output="client", format="wav"))
    peak_rss = peak_unread = 0
    deadline = time.monotonic() + 20  # synthesis runs; nobody reads
    while time.monotonic() < deadline:
        status = observer.status()
        peak_rss = max(peak_rss, status["daemon_rss_bytes"])
        peak_unread = max(peak_unread, status.get("output", {}).get("unread_bytes", 0))  # (before #11: none)
        time.sleep(0.5)
    overruns = observer.status().get("output", {}).get("overruns", 0) - before.get("output", {}).get("overruns", 0)
    for sock in sockets:
        sock.close()  # the daemon finds them gone at its next send and cancels their speech
    return {"readers": readers, "requests": readers * 3, "seconds": 20,
            "daemon_rss_mb_before": round(before["daemon_rss_bytes"] / 2**20, 1),
            "daemon_rss_mb_peak": round(peak_rss / 2**20, 1), "unread_mb_peak": round(peak_unread / 2**20, 1),
            "overruns": overruns}


def page_image() -> bytes:
    from bench.ocr import render

    lines = [f"Row {row}: fresh milk, keep refrigerated, use by 24 June" for row in range(20)]
    return render(lines, (1200, 800), "DejaVuSans.ttf", 18)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--malformed", type=int, default=100_000)
    parser.add_argument("--cycles", type=int, default=10_000)
    parser.add_argument("--cancels", type=int, default=2_000)
    parser.add_argument("--slow-readers", type=int, default=4)
    parser.add_argument("--output", type=Path, default=RESULTS / "soak.json")
    args = parser.parse_args()

    from edge_agent.client import Client
    from tests.daemon_util import Daemon

    random.seed(1)
    with tempfile.TemporaryDirectory(prefix="edge-agent-soak-") as folder:
        work = Path(folder)
        package = tiny_chat_package(work)
        daemon = Daemon(work / "daemon", {"models": {"dir": str(package.parent), "chat": str(package)},
                                          "server": {"max_inflight_per_client": 4, "max_queue": 16},
                                          "chat": {"max_tokens_limit": 1024}})
        result: dict = {"machine": machine(), "phases": {}}
        try:
            observer = Client(daemon.address, timeout=30)
            list(observer.chat("warm up", max_tokens=2))
            observer.ocr(page_image())
            result["start"] = state(daemon, observer)
            pinger = Pinger(daemon.address)
            pinger.start()
            slow = phase_slow_readers
            for name, run in (("malformed", lambda: phase_malformed(daemon.address, args.malformed)),
                              ("churn", lambda: phase_churn(daemon.address, args.cycles)),
                              ("cancel_floods", lambda: phase_cancels(daemon.address, args.cancels, page_image())),
                              ("slow_readers", lambda: slow(daemon.address, args.slow_readers, observer))):
                print(f"soak: {name} ...", file=sys.stderr, flush=True)
                pinger.take()
                outcome = run()
                outcome["ping_under_load"] = pinger.take()
                time.sleep(2)
                outcome["after"] = state(daemon, observer)
                result["phases"][name] = outcome
            pinger.running = False
            pinger.join(5)
            result["end"] = state(daemon, observer)
            observer.close()
            pinger.client.close()
        finally:
            daemon.stop()
    write_result(args.output, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
