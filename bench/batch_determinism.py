"""Does batching change greedy answers? The same prompts, greedy, each alone and then all
together in one og.Engine batch (the daemon's chat path), on one package, in one run.

    python bench/batch_determinism.py [--package PKG] [--prompts 12] [--tokens 32] [--output FILE]

The prompts differ in length (19 to 120 tokens): a static batch pads them, which is where the
numbers can part. Without --package it builds the tiny random fixture; with the full-size
package of bench/export_text.py it answers the question for a real-size model. Per prompt:
whether the batched token ids equal the alone ones, and where they first differ; with
--daemon also the texts through a real daemon, alone and from concurrent clients. Writes
bench/results/batch_determinism.json (or --output).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import RESULTS, machine, tiny_chat_package, write_result  # noqa: E402

TOPICS = ["the weather", "a medicine label", "a bus timetable", "a recipe for soup", "a parcel label",
          "a letter from the bank", "a museum sign", "a train delay", "a birthday card", "a water bill",
          "a fire exit sign", "a cinema ticket", "a school notice", "a menu", "a warranty", "a receipt"]


def generate(engine, og, buffer, prompts: list, tokens: int) -> list[list[int]]:
    """Greedy answers to `prompts`, submitted together (one prompt: alone)."""
    requests, answers = [], []
    for ids in prompts:
        request = engine.create_request()
        options = og.TurnOptions(request)
        options.set_max_generated_tokens(tokens)
        options.set_do_sample(False)
        request.begin_turn(ids, options)
        requests.append(request)
        answers.append([])
    while engine.has_pending_requests():
        for event in engine.run(buffer):
            if event.flags.value & og.EngineEventFlags.TOKEN.value:
                n = next(i for i, request in enumerate(requests) if request == event.request)  # as the engine does
                answers[n].append(int(event.token))
    for request in requests:
        request.close()
    return answers


def daemon_phase(package: Path, prompts: list[str], tokens: int) -> dict:
    """The same prompts through a daemon: one at a time, then from as many clients at once,
    plain and `unbatched`."""
    from edge_agent.client import Client
    from tests.daemon_util import Daemon

    with tempfile.TemporaryDirectory(prefix="edge-agent-batch-daemon-") as folder:
        daemon = Daemon(Path(folder), {"models": {"dir": str(package.parent), "chat": str(package)},
                                       "server": {"max_queue": len(prompts) + 1},
                                       "chat": {"engine_timeout_s": 600.0}})
        try:
            with Client(daemon.address, timeout=900) as client:
                alone = [client.call("chat", messages=[{"role": "user", "content": p}], max_tokens=tokens)["text"]
                         for p in prompts]
            together = concurrently(daemon.address, prompts, tokens, unbatched=False)
            start = time.perf_counter()
            unbatched = concurrently(daemon.address, prompts, tokens, unbatched=True)
            unbatched_s = time.perf_counter() - start
        finally:
            daemon.stop()
    same = [alone[n] == together.get(n) for n in range(len(prompts))]
    same_unbatched = [alone[n] == unbatched.get(n) for n in range(len(prompts))]
    return {"clients": len(prompts), "same_concurrent_as_alone": sum(same), "same": same,
            "same_concurrent_unbatched_as_alone": sum(same_unbatched), "unbatched_s": round(unbatched_s, 1)}


def concurrently(address: str, prompts: list[str], tokens: int, unbatched: bool) -> dict[int, str]:
    """The prompts from as many clients, all sent at the same moment: their answers by index."""
    import threading

    from edge_agent.client import Client

    answers: dict[int, str] = {}
    barrier = threading.Barrier(len(prompts))

    def ask(n: int) -> None:
        with Client(address, timeout=900) as c:
            barrier.wait()
            answers[n] = c.call("chat", messages=[{"role": "user", "content": prompts[n]}], max_tokens=tokens,
                                **({"unbatched": True} if unbatched else {}))["text"]

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--package", type=Path)
    parser.add_argument("--prompts", type=int, default=12)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--daemon", action="store_true",
                        help="also through a real daemon: each prompt alone, then all from concurrent clients")
    parser.add_argument("--output", type=Path, default=RESULTS / "batch_determinism.json")
    args = parser.parse_args()

    import numpy as np
    import onnxruntime_genai as og

    from edge_agent.engines.genai import load_model

    with tempfile.TemporaryDirectory(prefix="edge-agent-batch-") as folder:
        package = args.package or tiny_chat_package(Path(folder))
        model = load_model(package)
        tokenizer = og.Tokenizer(model)
        engine = og.Engine(model)
        buffer = engine.create_event_buffer(256)
        prompts, prompts_text = [], []
        for n in range(args.prompts):
            prompts_text.append(f"Read {TOPICS[n % len(TOPICS)]} aloud to me, please." + " Thank you." * (3 * n))
            text = tokenizer.apply_chat_template(json.dumps([{"role": "user", "content": prompts_text[-1]}]),
                                                 add_generation_prompt=True)
            prompts.append(np.asarray(tokenizer.encode(text), dtype=np.int32))
        start = time.perf_counter()
        alone = [generate(engine, og, buffer, [ids], args.tokens)[0] for ids in prompts]
        alone_s = time.perf_counter() - start
        again = [generate(engine, og, buffer, [ids], args.tokens)[0] for ids in prompts[:3]]
        start = time.perf_counter()
        batched = generate(engine, og, buffer, prompts, args.tokens)
        batched_s = time.perf_counter() - start
        del engine, model  # the daemon loads its own copy
        through_daemon = daemon_phase(package, prompts_text, args.tokens) if args.daemon else None

    rows = []
    for n, (a, b) in enumerate(zip(alone, batched)):
        differs = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
        first = differs[0] if differs else (None if len(a) == len(b) else min(len(a), len(b)))
        rows.append({"prompt": n, "prompt_tokens": int(len(prompts[n])), "same": a == b,
                     "first_difference_at": first, "alone_tokens": len(a), "batched_tokens": len(b)})
    result = {"benchmark": "batch_determinism", "machine": machine(),
              "package": str(package) if args.package else "tiny random fixture (exported on the fly)",
              "prompts": args.prompts, "tokens": args.tokens,
              "alone_repeatable": all(x == y for x, y in zip(alone, again)),
              "same_batched_as_alone": sum(r["same"] for r in rows), "alone_s": round(alone_s, 2),
              "batched_s": round(batched_s, 2), "rows": rows}
    if through_daemon is not None:
        result["daemon"] = through_daemon
    write_result(args.output, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
