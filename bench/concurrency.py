"""Benchmark: several clients at once (#12), each scenario in-process and through the daemon, in one run.

    python bench/concurrency.py [--package PKG] [--tokens 32] [--output FILE]

Scenarios (every answer is exactly its token count: `min_tokens`, so a random model's early
end-of-turn token cannot shorten one run and not the other):

- alone: one request of `tokens`, `--repeats` times (5): median TTFT and decode tokens/s;
- aligned: 4 requests sent at the same moment: TTFT per client, per-client and aggregate tokens/s;
- staggered: A asks for 3 x `tokens`; B (`tokens`) arrives once A has streamed 8 tokens: B's
  TTFT, and A's tokens/s while B runs against A's rate alone.

Each runs on four paths, one after the other so they never compete for the CPU:
`og_engine` (onnxruntime-genai's og.Engine, one engine, in this process), `worker` (the
daemon's chat engine code, edge_agent.engines.genai_chat.ChatWorker, in this process),
`daemon_one_batch` (the daemon with chat.max_batches = 1: one static batch at a time, what
the daemon did before) and `daemon` (the daemon as shipped). Without --package it uses the
tiny random fixture (seconds); the numbers that matter come from the full-size package.
Writes bench/results/concurrency.json (or --output).

    python bench/concurrency.py --package PKG --batch-sizes 4,1

only runs the aligned scenario on the daemon's engine code with chat.max_batch_size set to each
value (one batch of 4, or each request in a batch of its own;
bench/results/concurrency_batch_size.json).

The og_engine path sets each request's session limit to its prompt plus the tokens asked, as the
daemon does; `og_engine_context_sized` repeats alone and aligned with og.Engine's default limit
(the model's context), which sizes every request's KV cache: the figures before that fix.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import RESULTS, fixture_size, machine, tiny_chat_package, write_result  # noqa: E402
from bench.daemon_chat import PROMPT  # noqa: E402

ALIGNED = 4
STAGGER_AFTER = 8  # B arrives once A has streamed this many tokens


def prompt(n: int) -> str:
    return f"{PROMPT} (reader {n})"


class Clock:
    """Token arrival times of one answer."""

    def __init__(self) -> None:
        self.sent = time.perf_counter()
        self.times: list[float] = []

    def tokens(self, count: int) -> None:
        now = time.perf_counter()
        self.times += [now] * count

    def summary(self) -> dict:
        """tok_s: decode rate after the first token; wall_tok_s: tokens over the whole time from
        sending to the last token (what an aggregate of several clients is measured like)."""
        t = self.times
        decode = (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] else None
        return {"tokens": len(t), "ttft_ms": round((t[0] - self.sent) * 1000, 1) if t else None,
                "tok_s": round(decode, 2) if decode else None,
                "wall_tok_s": round(len(t) / (t[-1] - self.sent), 2) if t else None}

    def rate_between(self, start: float, end: float) -> float | None:
        inside = [x for x in self.times if start <= x <= end]
        return round((len(inside) - 1) / (inside[-1] - inside[0]), 2) if len(inside) > 1 and inside[-1] > inside[0] \
            else None


def median_of(runs: list[dict]) -> dict:
    """One client alone, asked several times: TTFT differences of a few ms need more than one sample."""
    return {"tokens": runs[0]["tokens"], "ttft_ms": round(statistics.median(r["ttft_ms"] for r in runs), 1),
            "tok_s": round(statistics.median(r["tok_s"] for r in runs), 2),
            "wall_tok_s": round(statistics.median(r["wall_tok_s"] for r in runs), 2), "runs": runs}


def aggregate(clocks: list[Clock]) -> dict:
    start = min(c.sent for c in clocks)
    end = max(c.times[-1] for c in clocks)
    total = sum(len(c.times) for c in clocks)
    return {"clients": [c.summary() for c in clocks], "wall_s": round(end - start, 3),
            "aggregate_tok_s": round(total / (end - start), 2)}


def staggered_summary(a: Clock, b: Clock) -> dict:
    overlap = a.rate_between(b.sent, b.times[-1])
    before = a.rate_between(a.times[0], b.sent)
    return {"a": a.summary(), "b": b.summary(), "a_tok_s_before_b": before, "a_tok_s_while_b_runs": overlap,
            "b_first_token_before_a_finished": b.times[0] < a.times[-1]}


# ---------------------------------------------------------------- og.Engine in-process

class OgEngine:
    def __init__(self, package: Path):
        import onnxruntime_genai as og

        from edge_agent.engines.genai import load_model

        self.og = og
        self.model = load_model(package)
        self.tokenizer = og.Tokenizer(self.model)
        self.engine = og.Engine(self.model)
        self.buffer = self.engine.create_event_buffer(64)
        self.size_to_need = True

    def ids(self, text: str):
        import numpy as np

        rendered = self.tokenizer.apply_chat_template(json.dumps([{"role": "user", "content": text}]),
                                                      add_generation_prompt=True)
        return np.asarray(self.tokenizer.encode(rendered), dtype=np.int32)

    def add(self, text: str, tokens: int, requests: dict, clocks: dict, name: str) -> None:
        og = self.og
        ids = self.ids(text)
        # the request's session limit sizes the static batch's KV cache: what it can use, as the
        # daemon sets it (the default, the model's context, costs 2-5x the prompt processing time)
        options = og.RequestOptions()
        if self.size_to_need:
            options.set_max_session_tokens(len(ids) + tokens)
        request = self.engine.create_request(options=options)
        turn = og.TurnOptions(request)
        turn.set_max_generated_tokens(tokens)
        turn.set_min_generated_tokens(tokens)
        clocks[name] = Clock()
        request.begin_turn(ids, turn)
        requests[name] = request

    def step(self, requests: dict, clocks: dict) -> None:
        flags = self.og.EngineEventFlags
        counts: dict[str, int] = {}
        for event in self.engine.run(self.buffer):
            if event.flags.value & flags.TOKEN.value:
                name = next(n for n, r in requests.items() if r == event.request)
                counts[name] = counts.get(name, 0) + 1
        for name, count in counts.items():
            clocks[name].tokens(count)

    def alone(self, tokens: int) -> dict:
        requests: dict = {}
        clocks: dict[str, Clock] = {}
        self.add(prompt(0), tokens, requests, clocks, "a")
        while self.engine.has_pending_requests():
            self.step(requests, clocks)
        self.close(requests)
        return clocks["a"].summary()

    def aligned(self, tokens: int) -> dict:
        requests: dict = {}
        clocks: dict[str, Clock] = {}
        for n in range(ALIGNED):
            self.add(prompt(n), tokens, requests, clocks, str(n))
        while self.engine.has_pending_requests():
            self.step(requests, clocks)
        self.close(requests)
        return aggregate(list(clocks.values()))

    def staggered(self, tokens: int) -> dict:
        requests: dict = {}
        clocks: dict[str, Clock] = {}
        self.add(prompt(0), 3 * tokens, requests, clocks, "a")
        while self.engine.has_pending_requests():
            self.step(requests, clocks)
            if "b" not in requests and len(clocks["a"].times) >= STAGGER_AFTER:
                self.add(prompt(1), tokens, requests, clocks, "b")
        self.close(requests)
        return staggered_summary(clocks["a"], clocks["b"])

    @staticmethod
    def close(requests: dict) -> None:
        for request in requests.values():
            request.close()


# ---------------------------------------------------------------- the daemon's engine code in-process

class TimedChannel:
    """What ChatWorker sends, with the moment each delta arrived."""

    def __init__(self) -> None:
        self.clocks: dict[str, Clock] = {}

    def event(self, job, kind, fields=None, attachments=()):
        if kind == "delta":
            self.clocks[job].tokens(fields["tokens"])

    def result(self, job, fields, attachments=()):
        pass

    def fail(self, job, error):
        raise RuntimeError(f"{job}: {error.to_error()}")

    def heartbeat(self):
        pass


class Worker:
    def __init__(self, package: Path):
        from edge_agent.engines.genai_chat import ChatWorker

        self.channel = TimedChannel()
        self.worker = ChatWorker(self.channel, {"package": str(package), "threads": None})

    def add(self, name: str, text: str, tokens: int) -> None:
        from edge_agent.engines.channel import EngineJob

        self.channel.clocks[name] = Clock()
        self.worker.handle(EngineJob(name, {"messages": [{"role": "user", "content": text}], "max_tokens": tokens,
                                            "min_tokens": tokens}))

    def round(self) -> None:
        self.worker.admit()
        self.worker.step_round()

    def run(self) -> None:
        while self.worker.jobs or self.worker.held:
            self.round()

    def alone(self, tokens: int) -> dict:
        self.channel.clocks.clear()
        self.add("a", prompt(0), tokens)
        self.run()
        return self.channel.clocks["a"].summary()

    def aligned(self, tokens: int) -> dict:
        self.channel.clocks.clear()
        for n in range(ALIGNED):
            self.add(str(n), prompt(n), tokens)
        self.run()
        return aggregate(list(self.channel.clocks.values()))

    def staggered(self, tokens: int) -> dict:
        self.channel.clocks.clear()
        self.add("a", prompt(0), 3 * tokens)
        while self.worker.jobs or self.worker.held:
            self.round()
            if "b" not in self.channel.clocks and len(self.channel.clocks["a"].times) >= STAGGER_AFTER:
                self.add("b", prompt(1), tokens)
        return staggered_summary(self.channel.clocks["a"], self.channel.clocks["b"])


# ---------------------------------------------------------------- through the daemon

def daemon_answer(address: str, text: str, tokens: int, clock: Clock, started: threading.Event | None = None,
                  barrier: threading.Barrier | None = None) -> None:
    from edge_agent.client import Client

    with Client(address, timeout=900) as client:
        client.ping()
        if barrier is not None:
            barrier.wait()
        clock.sent = time.perf_counter()
        for event in client.chat_events(text, max_tokens=tokens, min_tokens=tokens):
            if event["event"] == "delta":
                clock.tokens(event["tokens"])
                if started is not None and len(clock.times) >= STAGGER_AFTER:
                    started.set()
            elif event["event"] == "error":
                raise RuntimeError(event)


def daemon_scenarios(address: str, tokens: int, repeats: int) -> dict:
    daemon_answer(address, prompt(0), tokens, Clock())  # warm-up: loads the model
    alone_runs = []
    for _ in range(repeats):
        alone = Clock()
        daemon_answer(address, prompt(0), tokens, alone)
        alone_runs.append(alone.summary())

    clocks = [Clock() for _ in range(ALIGNED)]
    barrier = threading.Barrier(ALIGNED)
    threads = [threading.Thread(target=daemon_answer, args=(address, prompt(n), tokens, clocks[n], None, barrier))
               for n in range(ALIGNED)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    aligned = aggregate(clocks)

    a, b, started = Clock(), Clock(), threading.Event()
    first = threading.Thread(target=daemon_answer, args=(address, prompt(0), 3 * tokens, a, started))
    first.start()
    started.wait(900)
    daemon_answer(address, prompt(1), tokens, b)
    first.join()
    return {"alone": median_of(alone_runs), "aligned": aligned, "staggered": staggered_summary(a, b)}


def run_daemon(work: Path, package: Path, max_batches: int, tokens: int, repeats: int) -> dict:
    from tests.daemon_util import Daemon

    daemon = Daemon(work / f"daemon-{max_batches}", {
        "models": {"dir": str(package.parent), "chat": str(package), "keep_alive_s": 0.0},
        "chat": {"max_tokens_limit": max(256, 4 * tokens), "max_batches": max_batches, "engine_timeout_s": 600.0},
        "server": {"max_inflight_per_client": 4, "max_queue": 16}, "logging": {"level": "warning"}})
    try:
        return daemon_scenarios(daemon.address, tokens, repeats)
    finally:
        daemon.stop()


def ratios(paths: dict) -> dict:
    og, served = paths["og_engine"], paths["daemon"]
    b_alone = served["alone"]["ttft_ms"]
    a_alone = served["alone"]["tok_s"]
    stag = served["staggered"]
    return {
        "daemon_b_ttft_vs_alone": round(stag["b"]["ttft_ms"] / b_alone, 3),
        "daemon_one_batch_b_ttft_vs_alone": round(paths["daemon_one_batch"]["staggered"]["b"]["ttft_ms"] / b_alone, 3),
        "daemon_a_tok_s_while_b_vs_alone": round(stag["a_tok_s_while_b_runs"] / a_alone, 3)
        if stag["a_tok_s_while_b_runs"] else None,
        "daemon_aligned_vs_og_engine_batch": round(served["aligned"]["aggregate_tok_s"]
                                                   / og["aligned"]["aggregate_tok_s"], 3),
        # like with like: the 4 clients' tokens over their wall time vs one client's over its own
        "daemon_aligned_vs_one_client": round(served["aligned"]["aggregate_tok_s"] / served["alone"]["wall_tok_s"], 3),
        "daemon_aligned_vs_one_client_decode_rate": round(served["aligned"]["aggregate_tok_s"] / a_alone, 3),
        "daemon_alone_decode_vs_og_engine": round(a_alone / og["alone"]["tok_s"], 3),
        "daemon_alone_ttft_overhead_ms": round(b_alone - og["alone"]["ttft_ms"], 1),
        "worker_alone_decode_vs_og_engine": round(paths["worker"]["alone"]["tok_s"] / og["alone"]["tok_s"], 3),
        "og_engine_aligned_sized_vs_context_sized": round(
            og["aligned"]["aggregate_tok_s"] / paths["og_engine_context_sized"]["aligned"]["aggregate_tok_s"], 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--package", type=Path, help="package to serve (default: tiny fixture, exported now)")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--batch-sizes", default=None, help="e.g. 4,1: only the aligned scenario per batch size")
    parser.add_argument("--repeats", type=int, default=5, help="runs of the one-client scenario per path (median)")
    args = parser.parse_args()

    from edge_agent.manifest import read_manifest

    work = Path(tempfile.mkdtemp(prefix="edge-agent-bench-"))
    try:
        package = args.package or tiny_chat_package(work)
        manifest = read_manifest(package)
        size = fixture_size(manifest)
        output = args.output or RESULTS / ("concurrency.json" if size == "full" else "concurrency_tiny.json")
        result: dict = {"benchmark": "concurrency", "machine": machine(), "package": str(package),
                        "fixture_size": size, "block_size": manifest.quantization["block_size"],
                        "tokens": args.tokens, "aligned_clients": ALIGNED, "stagger_after_tokens": STAGGER_AFTER}
        paths: dict = {}
        if args.batch_sizes:
            output = args.output or RESULTS / "concurrency_batch_size.json"
            worker = Worker(package)
            worker.alone(4)  # warm-up
            result["alone"] = worker.alone(args.tokens)
            result["aligned_by_batch_size"] = {}
            for size_cap in [int(n) for n in args.batch_sizes.split(",")]:
                worker.worker.max_batch_size = size_cap
                result["aligned_by_batch_size"][str(size_cap)] = worker.aligned(args.tokens)
            write_result(output, result)
            return 0
        print("og.Engine in-process...", file=sys.stderr)
        engine = OgEngine(package)
        engine.alone(4)  # warm-up
        paths["og_engine"] = {"alone": median_of([engine.alone(args.tokens) for _ in range(args.repeats)]),
                              "aligned": engine.aligned(args.tokens),
                              "staggered": engine.staggered(args.tokens)}
        # before: og.Engine's default session limit (the model's context) sizes every KV cache
        engine.size_to_need = False
        paths["og_engine_context_sized"] = {"alone": engine.alone(args.tokens), "aligned": engine.aligned(args.tokens)}
        del engine
        print("ChatWorker in-process...", file=sys.stderr)
        worker = Worker(package)
        worker.alone(4)
        paths["worker"] = {"alone": median_of([worker.alone(args.tokens) for _ in range(args.repeats)]),
                           "aligned": worker.aligned(args.tokens),
                           "staggered": worker.staggered(args.tokens)}
        del worker
        print("daemon, one batch at a time (before)...", file=sys.stderr)
        paths["daemon_one_batch"] = run_daemon(work, package, 1, args.tokens, args.repeats)
        print("daemon...", file=sys.stderr)
        paths["daemon"] = run_daemon(work, package, 4, args.tokens, args.repeats)
        result["paths"] = paths
        result["ratios"] = ratios(paths)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_result(output, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
