"""The chat engine, run inside an engine child process (see host.py).

A thin loop over onnxruntime-genai's continuous-batching `og.Engine`: each chat job becomes
an `og.Request` turn; every engine step's tokens are decoded per request and sent to the
daemon as text deltas. Sessions keep their `og.Request` (and so their KV cache) between
turns where the library allows it: 0.18 continues a request's sequence only while it is the
one resident request, so one idle session request is kept, and evicted (to be re-prefilled
next time) as soon as other work arrives.

Batching changes greedy answers: a prompt batched with prompts of other lengths can take
another token where the top two logits nearly tie (bench/batch_determinism.py). A request
marked `unbatched` therefore waits until the running batch has finished, runs alone, and
nothing joins it; requests behind it wait their turn.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CONTEXT_EXCEEDED, INTERNAL, UNSUPPORTED, CodedError, cancelled
from .channel import EngineJob
from .genai import load_model
from .stopstrings import StopStringFilter
from .worker import HEARTBEAT_S, Incoming, WorkerChannel, serve_model

FINISH_REASONS = {"EOS": "stop", "STOP_STRING": "stop_string", "MAX_GENERATED_TOKENS": "length",
                  "MAX_SESSION_TOKENS": "context", "CANCELLED": "cancelled", "FAILED": "failed"}


@dataclass
class Resident:
    """A finished session turn whose request (and KV cache) is kept for the next turn."""
    session: str | None
    request: Any  # og.Request
    text: str  # the exact text whose tokens are in the KV cache
    tokens: int


@dataclass
class Job:
    id: str
    request: Any  # og.Request
    turn: int
    stream: Any  # og.TokenizerStream
    filter: StopStringFilter
    session: str | None
    prompt_text: str
    prompt_tokens: int
    cached_tokens: int
    dropped_turns: int
    stream_deltas: bool
    started: float
    first_token: float | None = None
    generated: int = 0
    answer_text: str = ""
    cancelled: bool = False
    stop_hit: bool = False
    tokens_since_send: int = 0
    pending_text: list[str] = field(default_factory=list)
    alone: bool = False  # `unbatched`: nothing runs beside it


class ChatWorker:
    def __init__(self, channel: WorkerChannel, spec: dict):
        import onnxruntime_genai as og

        self.og = og
        self.channel = channel
        self.model = load_model(Path(spec["package"]), spec.get("threads") or None)
        self.tokenizer = og.Tokenizer(self.model)
        self.engine = og.Engine(self.model)
        self.buffer = self.engine.create_event_buffer(256)
        config = json.loads((Path(spec["package"]) / "genai_config.json").read_text())
        self.context_length = int(config["search"]["max_length"])
        self.eos_ids = set(int(t) for t in self.tokenizer.eos_token_ids)
        self.jobs: dict[str, Job] = {}
        self.resident: Resident | None = None
        self.held: list[EngineJob] = []  # jobs waiting for an unbatched one, or to run alone
        self.json_schema = self._probe_guidance()
        # stop strings and per-turn seeds need the dynamic-batching (paged, CUDA) engine; on the
        # static CPU engine stop strings are watched here, and seeds are refused
        self.dynamic_batching = isinstance(config.get("engine", {}).get("dynamic_batching"), dict)
        self.running = True

    def _probe_guidance(self) -> bool:
        """Whether this build can constrain output to a JSON schema (llguidance compiled in)."""
        request = self.engine.create_request()
        try:
            options = self.og.TurnOptions(request)
            options.set_guidance("json_schema", json.dumps({"type": "object"}))
            return True
        except Exception:  # noqa: BLE001 - any failure means: not supported
            return False
        finally:
            request.close()

    def info(self) -> dict:
        caps = self.engine.get_capabilities()
        return {"context_length": self.context_length, "json_schema": self.json_schema,
                "seed": self.dynamic_batching, "dynamic_batching": self.dynamic_batching,
                "max_batch": int(caps.configured_max_batch_size), "model_type": self.model.type}

    # ---------------------------------------------------------------- prompts

    def render(self, messages: list[dict]) -> str:
        return self.tokenizer.apply_chat_template(json.dumps(messages), add_generation_prompt=True)

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self.tokenizer.encode(text), dtype=np.int32)

    def fit_context(self, messages: list[dict], max_tokens: int,
                    policy: str) -> tuple[list[dict], str, np.ndarray, int]:
        """Render and tokenize; drop oldest turns if asked and needed. Returns the messages
        kept, the prompt text, its tokens and the number of turns dropped."""
        dropped = 0
        while True:
            text = self.render(messages)
            tokens = self.encode(text)
            if len(tokens) + max_tokens <= self.context_length:
                return messages, text, tokens, dropped
            first = 1 if messages[0]["role"] == "system" else 0
            if policy != "drop_oldest" or len(messages) - first <= 1:
                raise CodedError(CONTEXT_EXCEEDED,
                               f"prompt of {len(tokens)} tokens plus max_tokens {max_tokens} exceeds the context "
                               f"of {self.context_length} tokens", prompt_tokens=len(tokens),
                               context_length=self.context_length)
            # a turn is a user message and the assistant answer after it
            cut = first + 1
            while cut < len(messages) - 1 and messages[cut]["role"] != "user":
                cut += 1
            messages = messages[:first] + messages[cut:]
            dropped += 1

    # ---------------------------------------------------------------- jobs

    def start_job(self, job: EngineJob) -> None:
        og = self.og
        job_id, message = job.job, job.payload
        messages, text, tokens, dropped = self.fit_context(message["messages"], message["max_tokens"],
                                                           message.get("context_policy", "error"))
        session = message.get("session")
        resident = self.resident
        reuse = (resident is not None and resident.session == session and not self.jobs
                 and dropped == 0 and text.startswith(resident.text))
        cached = 0
        if resident is not None and reuse:
            request, suffix = resident.request, text[len(resident.text):]
            new_tokens = self.encode(suffix)  # the suffix starts at a special token: same ids as in one piece
            cached = resident.tokens
            self.resident = None
        else:
            self.evict_resident()
            options = og.RequestOptions()
            options.set_max_session_tokens(self.context_length)
            request = self.engine.create_request(options=options)
            new_tokens = tokens
        turn = og.TurnOptions(request)
        turn.set_max_generated_tokens(message["max_tokens"])
        temperature = float(message.get("temperature", 0.0))
        turn.set_do_sample(temperature > 0)
        if temperature > 0:
            turn.set_temperature(temperature)
            turn.set_top_p(float(message.get("top_p", 1.0)))
            turn.set_top_k(int(message.get("top_k", 0)))
        if message.get("seed") is not None:
            if not self.dynamic_batching:
                raise CodedError(UNSUPPORTED, "a sampling seed needs an engine with dynamic batching "
                               "(CUDA packages with paged attention); this one is static", field="seed")
            turn.set_seed(int(message["seed"]))
        if message.get("json_schema") is not None:
            schema = dict(message["json_schema"])
            # compact JSON unless the client says otherwise: free whitespace lets a model spend
            # its whole token budget on blanks (llguidance's x-guidance options)
            schema.setdefault("x-guidance", {"whitespace_flexible": False})
            turn.set_guidance("json_schema", json.dumps(schema))
        turn_id = request.begin_turn(new_tokens, turn)
        self.jobs[job_id] = Job(
            id=job_id, request=request, turn=turn_id, stream=self.tokenizer.create_stream(),
            filter=StopStringFilter(message.get("stop") or ()), session=session, prompt_text=text,
            prompt_tokens=cached + len(new_tokens), cached_tokens=cached, dropped_turns=dropped,
            stream_deltas=message.get("stream", True), started=time.monotonic(),
            alone=bool(message.get("unbatched")))
        if dropped:
            self.channel.event(job_id, "dropped", {"dropped_turns": dropped, "messages_kept": len(messages)})

    def evict_resident(self) -> None:
        if self.resident is not None:
            self.resident.request.close()
            self.resident = None

    def admit(self) -> None:
        """Start held jobs in order: an unbatched one once nothing runs, and nothing beside it."""
        while self.held:
            if any(job.alone for job in self.jobs.values()):
                return
            if self.held[0].payload.get("unbatched") and self.jobs:
                return
            job = self.held.pop(0)
            self.start(job)
            if job.payload.get("unbatched"):
                return

    def start(self, message: EngineJob) -> None:
        try:
            self.start_job(message)
        except CodedError as exc:
            self.channel.fail(message.job, exc)
        except Exception as exc:  # noqa: BLE001 - reported to the client as `internal`
            self.channel.fail(message.job, CodedError(INTERNAL, f"{type(exc).__name__}: {exc}"))

    def cancel_job(self, job_id: str) -> None:
        held = next((m for m in self.held if m.job == job_id), None)
        if held is not None:
            self.held.remove(held)
            self.channel.fail(job_id, cancelled())
            return
        job = self.jobs.get(job_id)
        if job is not None and not job.cancelled:
            job.cancelled = True
            job.request.cancel_turn(job.turn)

    def find_job(self, request) -> Job | None:
        for job in self.jobs.values():
            if job.request == request:
                return job
        return None

    def on_token(self, job: Job, token: int, last: bool, finish: str | None) -> None:
        if job.first_token is None:
            job.first_token = time.monotonic()
        job.generated += 1
        if finish == "EOS" and token in self.eos_ids:
            return  # the end-of-turn token is not text
        piece = job.stream.decode(token)
        shown = job.filter.push(piece)
        if shown:
            job.pending_text.append(shown)
        job.tokens_since_send += 1
        if job.filter.stopped and not job.stop_hit and not last:
            job.stop_hit = True  # a stop string is complete: end the turn here
            job.request.cancel_turn(job.turn)

    def flush(self, job: Job) -> None:
        if job.stream_deltas and (job.pending_text or job.tokens_since_send):
            self.channel.event(job.id, "delta", {"text": "".join(job.pending_text), "tokens": job.tokens_since_send})
        job.pending_text.clear()
        job.tokens_since_send = 0

    def finish_job(self, job: Job, reason: str, usage) -> None:
        tail = job.filter.finish()
        if tail:
            job.pending_text.append(tail)
        self.flush(job)
        del self.jobs[job.id]
        now = time.monotonic()
        text = job.filter.visible_text
        stopped = job.stop_hit or job.filter.stopped
        if reason == "CANCELLED" and not stopped:
            job.request.close()
            self.channel.fail(job.id, cancelled())
            return
        if stopped:
            reason = "STOP_STRING"
        # keep the request for the session's next turn only if its KV holds exactly the
        # prompt plus the text the client saw, and nothing else is resident
        keep = (job.session is not None and not self.jobs and reason in ("EOS", "MAX_GENERATED_TOKENS")
                and not job.filter.stopped)
        if keep:
            self.evict_resident()
            end = "<|end|>" if reason == "EOS" else ""
            self.resident = Resident(job.session, job.request, job.prompt_text + text + end,
                                     job.prompt_tokens + job.generated)
        else:
            job.request.close()
        decode_s = now - job.first_token if job.first_token else 0.0
        self.channel.result(job.id, {
            "text": text, "finish_reason": FINISH_REASONS.get(reason, reason.lower()),
            "dropped_turns": job.dropped_turns, "prompt_cache": "reused" if job.cached_tokens else "new",
            "usage": {"prompt_tokens": job.prompt_tokens, "cached_tokens": job.cached_tokens,
                      "new_prompt_tokens": job.prompt_tokens - job.cached_tokens,
                      "generated_tokens": job.generated,
                      "engine_ttft_ms": round((job.first_token - job.started) * 1000, 1) if job.first_token else None,
                      "tokens_per_s": round((job.generated - 1) / decode_s, 2) if job.generated > 1 and decode_s > 0
                      else None,
                      "engine_total_ms": round((now - job.started) * 1000, 1)}})

    def step(self) -> None:
        flags = self.og.EngineEventFlags
        touched: dict[str, Job] = {}
        for ev in self.engine.run(self.buffer):
            job = self.find_job(ev.request)
            if job is None:
                continue
            bits = ev.flags.value
            finish = ev.finish_reason.name if bits & flags.TURN_FINISHED.value else None
            if bits & flags.TOKEN.value:
                self.on_token(job, int(ev.token), finish is not None, finish)
                touched[job.id] = job
            if bits & flags.FAILED.value:
                touched.pop(job.id, None)
                del self.jobs[job.id]
                job.request.close()
                self.channel.fail(job.id, CodedError(INTERNAL, f"engine failed the request: {ev.error_code.name}"))
            elif finish is not None:
                touched.pop(job.id, None)
                self.finish_job(job, finish, ev.usage)
        for job in touched.values():
            self.flush(job)

    # ---------------------------------------------------------------- loop

    def handle(self, message: Incoming) -> None:
        if isinstance(message, EngineJob):
            self.held.append(message)
            self.admit()
        elif message["type"] == "cancel":
            self.cancel_job(message["job"])
        elif message["type"] == "forget":  # a privacy wipe: no session's KV stays
            self.evict_resident()
        elif message["type"] == "stop":
            self.running = False

    def run(self) -> None:
        while self.running:
            busy = self.engine.has_pending_requests() and bool(self.jobs)
            waiting = self.channel.poll(0 if busy else int(HEARTBEAT_S * 1000))
            while waiting:
                self.handle(self.channel.receive())
                waiting = self.channel.poll(0)
            if self.jobs and self.engine.has_pending_requests():
                self.step()
                self.admit()
            self.channel.heartbeat()
        self.evict_resident()


def serve(channel: WorkerChannel, spec: dict) -> None:
    """Engine-process entry point (see worker.child_main)."""
    serve_model(channel, spec, ChatWorker)
