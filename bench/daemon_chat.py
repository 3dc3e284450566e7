"""Benchmark: chat through the daemon against onnxruntime-genai in-process, in one run.

    python bench/daemon_chat.py [--package PKG] [--tokens 64] [--repeats 5] [--output FILE]

Without --package it builds the tiny random fixture and exports it (seconds); with the
full-size package from bench/export_text.py it measures what a user would see. Steps, one
after the other so they never compete for the CPU:

1. in-process: og.Engine with one request (the path the daemon uses) on the same package:
   TTFT and decode tokens/s;
2. the daemon (a real `edge-agent serve` process over its IPC socket), one client: TTFT and
   decode tokens/s as the client sees them, and their ratio to in-process;
3. aggregate tokens/s with 1, 2, 4 and 8 concurrent clients;
4. cancel latency: from sending `cancel` to receiving the cancelled terminal event (p50/p95);
5. per-token overhead: daemon per-token time minus in-process per-token time, and the round
   trip of a `ping`.

Writes bench/results/daemon_chat.json (or --output).
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

from bench.common import RESULTS, fixture_size, machine, percentile, tiny_chat_package, write_result  # noqa: E402

PROMPT = ("You are reading a medicine label for a person who cannot see it. The label says: take one "
          "tablet twice a day with food, do not exceed four tablets in twenty-four hours, keep out of "
          "reach of children. What does it say?")


class InProcess:
    """og.Engine with one request on the package, in this process: the daemon's own path."""

    def __init__(self, package: Path, tokens: int):
        import numpy as np
        import onnxruntime_genai as og

        from edge_agent.engines.genai import load_model

        self.og = og
        self.tokens = tokens
        self.model = load_model(package)
        self.tokenizer = og.Tokenizer(self.model)
        self.engine = og.Engine(self.model)
        self.buffer = self.engine.create_event_buffer(64)
        prompt = self.tokenizer.apply_chat_template(json.dumps([{"role": "user", "content": PROMPT}]),
                                                    add_generation_prompt=True)
        self.ids = np.asarray(self.tokenizer.encode(prompt), dtype=np.int32)

    def once(self) -> tuple[float, float, int]:
        og = self.og
        request = self.engine.create_request()
        options = og.TurnOptions(request)
        options.set_max_generated_tokens(self.tokens)
        start = time.perf_counter()
        request.begin_turn(self.ids, options)
        times = []
        while self.engine.has_pending_requests():
            for event in self.engine.run(self.buffer):
                if event.flags.value & og.EngineEventFlags.TOKEN.value:
                    times.append(time.perf_counter())
        request.close()
        return times[0] - start, (len(times) - 1) / (times[-1] - times[0]), len(times)


def daemon_once(client, tokens: int) -> tuple[float, float, int]:
    start = time.perf_counter()
    times = []
    for event in client.chat_events(PROMPT, max_tokens=tokens):
        if event["event"] == "delta":
            times += [time.perf_counter()] * event["tokens"]
        elif event["event"] == "result":
            assert event["usage"]["generated_tokens"] == len(times)
    return times[0] - start, (len(times) - 1) / (times[-1] - times[0]), len(times)


def single_client(local: InProcess, address: str, tokens: int, repeats: int) -> dict:
    """In-process and daemon runs alternate, so drift of the machine's speed hits both alike."""
    from edge_agent.client import Client

    with Client(address, timeout=600) as client:
        local.once()
        daemon_once(client, tokens)  # warm-up both (the daemon loads its model here)
        pairs = [(local.once(), daemon_once(client, tokens)) for _ in range(repeats)]
        pings = []
        for _ in range(50):
            t0 = time.perf_counter()
            client.ping()
            pings.append((time.perf_counter() - t0) * 1000)

    def summary(runs) -> dict:
        return {"ttft_ms": round(statistics.median(r[0] for r in runs) * 1000, 2),
                "decode_tok_s": round(statistics.median(r[1] for r in runs), 2),
                "decode_tok_s_samples": [round(r[1], 2) for r in runs], "tokens": [r[2] for r in runs]}

    local_runs, daemon_runs = [p[0] for p in pairs], [p[1] for p in pairs]
    return {"prompt_tokens": int(len(local.ids)), "in_process": summary(local_runs),
            "daemon": {**summary(daemon_runs), "ping_rtt_ms_p50": round(statistics.median(pings), 3)},
            "paired_decode_ratio_median": round(statistics.median(d[1] / local[1] for local, d in pairs), 3),
            "paired_ttft_ratio_median": round(statistics.median(d[0] / local[0] for local, d in pairs), 3)}


def aggregate(address: str, clients: int, tokens: int) -> dict:
    from edge_agent.client import Client

    counts = [0] * clients
    barrier = threading.Barrier(clients + 1)

    def run(n: int) -> None:
        with Client(address, timeout=600) as client:
            barrier.wait()
            for event in client.chat_events(f"{PROMPT} (reader {n})", max_tokens=tokens):
                if event["event"] == "delta":
                    counts[n] += event["tokens"]

    threads = [threading.Thread(target=run, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    return {"clients": clients, "tokens": sum(counts), "wall_s": round(wall, 3),
            "aggregate_tok_s": round(sum(counts) / wall, 2)}


def cancel_latency(address: str, trials: int) -> dict:
    from edge_agent.client import Client

    latencies = []
    with Client(address, timeout=600) as client:
        for _ in range(trials):
            rid = client.send("chat", messages=[{"role": "user", "content": PROMPT}], max_tokens=1000)
            while client.next_event(rid, 600)["event"] != "delta":
                pass
            start = time.perf_counter()
            client.send("cancel", target=rid)
            while True:
                event = client.next_event(rid, 600)
                if event["final"]:
                    break
            latencies.append((time.perf_counter() - start) * 1000)
            assert event["event"] == "error" and event["error"]["code"] == "cancelled", event
    return {"trials": trials, "p50_ms": round(percentile(latencies, 0.5), 2),
            "p95_ms": round(percentile(latencies, 0.95), 2), "max_ms": round(max(latencies), 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--package", type=Path, help="package to serve (default: tiny fixture, exported now)")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cancel-trials", type=int, default=20)
    parser.add_argument("--clients", default="1,2,4,8")
    parser.add_argument("--output", type=Path, default=RESULTS / "daemon_chat.json")
    args = parser.parse_args()

    from edge_agent.manifest import read_manifest
    from tests.daemon_util import Daemon

    work = Path(tempfile.mkdtemp(prefix="edge-agent-bench-"))
    try:
        package = args.package or tiny_chat_package(work)
        manifest = read_manifest(package)
        size = fixture_size(manifest)
        result = {"benchmark": "daemon_chat", "machine": machine(), "package": str(package), "fixture_size": size,
                  "parameters": manifest.source["num_parameters"], "block_size": manifest.quantization["block_size"],
                  "tokens_per_request": args.tokens}
        local = InProcess(package, args.tokens)
        daemon = Daemon(work / "daemon", {"models": {"dir": str(package.parent), "chat": str(package),
                                                     "keep_alive_s": 0.0},
                                          "chat": {"max_tokens_limit": 2048},
                                          "server": {"max_inflight_per_client": 4, "max_queue": 16},
                                          "logging": {"level": "warning"}})
        try:
            print(f"one client, daemon and in-process alternating ({size})...", file=sys.stderr)
            result.update(single_client(local, daemon.address, args.tokens, args.repeats))
            base, served = result["in_process"], result["daemon"]
            result["per_token_overhead_us"] = round((1 / served["decode_tok_s"] - 1 / base["decode_tok_s"]) * 1e6, 1)
            del local  # free its model before the concurrency runs
            result["concurrency"] = []
            for clients in [int(c) for c in args.clients.split(",")]:
                print(f"daemon, {clients} concurrent clients...", file=sys.stderr)
                result["concurrency"].append(aggregate(daemon.address, clients, args.tokens))
            single = result["concurrency"][0]["aggregate_tok_s"]
            for entry in result["concurrency"]:
                entry["vs_one_client"] = round(entry["aggregate_tok_s"] / single, 3)
            print("cancel latency...", file=sys.stderr)
            result["cancel_latency"] = cancel_latency(daemon.address, args.cancel_trials)
        finally:
            daemon.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_result(args.output, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
