"""The chat engine, run inside an engine child process (see host.py).

A thin loop over onnxruntime-genai's `og.Engine`: each chat job becomes an `og.Request`
turn; every engine step's tokens are decoded per request and sent to the daemon as text
deltas.

Scheduling. On the CPU, 0.18's engine batches statically: a request added while a batch runs
waits until that whole batch has finished, so one long answer would hold every other client.
So the worker keeps several engines over the one loaded model (weights and session are
shared; each engine holds only its own requests' KV cache), one batch each, and steps the
running batches in turn, one token each. Requests that arrive together start together in one
batch (batching is what makes 4 clients cheaper than 4 answers one after the other); a request
that arrives while others run starts in a batch of its own at once, up to `max_batches`. A
request's priority orders this: only the batches of the highest priority present are stepped,
and requests of different priorities never share a batch.

Memory: 0.18's static engine allocates (and touches) a batch's whole KV cache when the batch
starts: rows x the longest request's session limit. So each request's limit is what it can
use, its prompt plus `max_tokens` (plus `session_reserve_tokens` for a session's later turns),
never the model's context: at the context (4096 tokens, 3 GiB of KV for Phi-3.5-mini) a
prompt of 64 tokens took 3.4 s instead of 1.4 s and a batch of 4 took 30 s instead of 6 s on 2
cores, filling the memory with cache nothing used. With a KV budget set, a request that would
take the allocated KV past it is refused with `busy` (reason `memory`) rather than let the
machine swap.

Sessions keep their `og.Request` (and so their KV cache) between turns where the library
allows it: 0.18 continues a request's sequence only while it is the one request of its
engine, so a finished session turn stays resident in its batch until that batch is needed
for other work (or the KV budget is).

Batching changes greedy answers: a prompt batched with prompts of other lengths can take
another token where the top two logits nearly tie (bench/batch_determinism.py). A request
marked `unbatched` runs in a batch of its own that nothing joins.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BUSY, CONTEXT_EXCEEDED, INTERNAL, UNSUPPORTED, CodedError, cancelled
from .channel import EngineJob
from .genai import load_model
from .stopstrings import StopStringFilter
from .worker import HEARTBEAT_S, Incoming, WorkerChannel, serve_model

FINISH_REASONS = {"EOS": "stop", "STOP_STRING": "stop_string", "MAX_GENERATED_TOKENS": "length",
                  "MAX_SESSION_TOKENS": "context", "CANCELLED": "cancelled", "FAILED": "failed"}
PRIORITIES = {"low": 0, "normal": 1, "high": 2}
DEFAULT_MAX_BATCHES = 4
# requests that arrive this close together, while nothing runs, start in one batch
DEFAULT_ADMISSION_WINDOW_MS = 5.0
# KV rows a session request keeps beyond its first turn, for the turns that follow
DEFAULT_SESSION_RESERVE_TOKENS = 1024


@dataclass
class Resident:
    """A finished session turn whose request (and KV cache) is kept for the next turn."""
    session: str | None
    request: Any  # og.Request
    text: str  # the exact text whose tokens are in the KV cache
    tokens: int
    capacity: int  # the request's session limit: the KV rows it holds


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
    capacity: int = 0  # the request's session limit: the KV rows allocated for it


@dataclass
class Batch:
    """One og.Engine over the shared model and the requests that started in it together."""
    engine: Any  # og.Engine
    buffer: Any  # its event buffer
    jobs: dict[str, Job] = field(default_factory=dict)
    resident: Resident | None = None
    running: bool = False  # stepped at least once: the static engine admits nothing more now
    priority: int = PRIORITIES["normal"]
    alone: bool = False  # an `unbatched` request: nothing joins it
    last_used: float = 0.0
    # rows of its KV cache: the requests started together (a kept turn keeps all of them)
    cache_rows: int = 0

    @property
    def idle(self) -> bool:
        return not self.jobs


class ChatWorker:
    def __init__(self, channel: WorkerChannel, spec: dict):
        import onnxruntime_genai as og

        self.og = og
        self.channel = channel
        self.model = load_model(Path(spec["package"]), spec.get("threads") or None)
        self.tokenizer = og.Tokenizer(self.model)
        config = json.loads((Path(spec["package"]) / "genai_config.json").read_text())
        self.context_length = int(config["search"]["max_length"])
        self.eos_ids = set(int(t) for t in self.tokenizer.eos_token_ids)
        self.max_batches = max(1, int(spec.get("max_batches") or DEFAULT_MAX_BATCHES))
        window = spec.get("admission_window_ms")
        self.admission_window_s = (DEFAULT_ADMISSION_WINDOW_MS if window is None else float(window)) / 1000
        # KV bytes the running sequences may reserve in all (0: no limit) and what one token costs
        self.kv_budget = int(spec.get("kv_budget_bytes") or 0)
        self.kv_per_token = int(spec.get("kv_bytes_per_token") or 0)
        reserve = spec.get("session_reserve_tokens")
        self.session_reserve = DEFAULT_SESSION_RESERVE_TOKENS if reserve is None else int(reserve)
        self.batches: list[Batch] = [self.new_batch()]
        self.max_batch_size = max(1, int(self.batches[0].engine.get_capabilities().configured_max_batch_size))
        if spec.get("max_batch_size"):  # a smaller cap: batched prompt processing is slow on some CPUs
            self.max_batch_size = min(self.max_batch_size, int(spec["max_batch_size"]))
        self.held: list[EngineJob] = []  # jobs waiting for a batch to start in
        self.told_queued: set[str] = set()  # held jobs the daemon was told wait for a batch
        self.json_schema = self._probe_guidance()
        # stop strings and per-turn seeds need the dynamic-batching (paged, CUDA) engine; on the
        # static CPU engine stop strings are watched here, and seeds are refused
        self.dynamic_batching = isinstance(config.get("engine", {}).get("dynamic_batching"), dict)
        self.running = True

    def new_batch(self) -> Batch:
        engine = self.og.Engine(self.model)
        return Batch(engine, engine.create_event_buffer(256))

    @property
    def jobs(self) -> dict[str, Job]:
        """Every running job, whichever batch it is in."""
        return {job.id: job for batch in self.batches for job in batch.jobs.values()}

    def _probe_guidance(self) -> bool:
        """Whether this build can constrain output to a JSON schema (llguidance compiled in)."""
        request = self.batches[0].engine.create_request()
        try:
            options = self.og.TurnOptions(request)
            options.set_guidance("json_schema", json.dumps({"type": "object"}))
            return True
        except Exception:  # noqa: BLE001 - any failure means: not supported
            return False
        finally:
            request.close()

    def info(self) -> dict:
        caps = self.batches[0].engine.get_capabilities()
        return {"context_length": self.context_length, "json_schema": self.json_schema,
                "seed": self.dynamic_batching, "dynamic_batching": self.dynamic_batching,
                "max_batch": int(caps.configured_max_batch_size), "max_batches": self.max_batches,
                "model_type": self.model.type}

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

    def start_job(self, job: EngineJob, batch: Batch) -> None:
        """Begin the job's turn in this batch (not yet running, or its session's resident one)."""
        og = self.og
        job_id, message = job.job, job.payload
        messages, text, tokens, dropped = self.fit_context(message["messages"], message["max_tokens"],
                                                           message.get("context_policy", "error"))
        session = message.get("session")
        needed = len(tokens) + message["max_tokens"]  # at most the context: fit_context saw to it
        resident = batch.resident
        # the session's kept turn, if this prompt continues exactly its text and fits in its cache
        kept = resident if (resident is not None and resident.session == session and batch.idle and dropped == 0
                            and text.startswith(resident.text) and needed <= resident.capacity) else None
        if kept is None:
            self.evict_resident(batch)
        batch.resident = None
        if kept is not None:
            capacity = kept.capacity
        else:
            capacity = needed if session is None else min(self.context_length, needed + self.session_reserve)
        try:
            self.check_memory(capacity, batch)
        except CodedError:
            batch.resident = kept  # a kept turn stays for a later try
            raise
        cached = kept.tokens if kept is not None else 0
        if kept is not None:
            request, suffix = kept.request, text[len(kept.text):]
            new_tokens = self.encode(suffix)  # the suffix starts at a special token: same ids as in one piece
        else:
            options = og.RequestOptions()
            # the static engine sizes the batch's KV cache by this: what the request can use
            options.set_max_session_tokens(capacity)
            request = batch.engine.create_request(options=options)
            new_tokens = tokens
        turn = og.TurnOptions(request)
        turn.set_max_generated_tokens(message["max_tokens"])
        if message.get("min_tokens"):
            turn.set_min_generated_tokens(int(message["min_tokens"]))
        temperature = float(message.get("temperature", 0.0))
        turn.set_do_sample(temperature > 0)
        if temperature > 0:
            turn.set_temperature(temperature)
            turn.set_top_p(float(message.get("top_p", 1.0)))
            turn.set_top_k(int(message.get("top_k", 0)))
        if message.get("seed") is not None:
            if not self.dynamic_batching:
                request.close()
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
        batch.jobs[job_id] = Job(
            id=job_id, request=request, turn=turn_id, stream=self.tokenizer.create_stream(),
            filter=StopStringFilter(message.get("stop") or ()), session=session, prompt_text=text,
            prompt_tokens=cached + len(new_tokens), cached_tokens=cached, dropped_turns=dropped,
            stream_deltas=message.get("stream", True), started=time.monotonic(),
            capacity=capacity)
        batch.cache_rows = max(batch.cache_rows, len(batch.jobs))
        batch.priority, batch.alone = priority_of(message), bool(message.get("unbatched"))
        batch.last_used = time.monotonic()
        if dropped:
            self.channel.event(job_id, "dropped", {"dropped_turns": dropped, "messages_kept": len(messages)})

    @staticmethod
    def kv_rows(batch: Batch, joining: int = 0) -> int:
        """KV rows (tokens) the batch's cache holds, with a request of capacity `joining` added:
        every row of a static batch is as long as its longest request's limit."""
        limits = [job.capacity for job in batch.jobs.values()] + ([joining] if joining else [])
        rows = max(limits) * len(limits) if limits else 0
        return rows + (batch.resident.capacity * max(1, batch.cache_rows) if batch.resident is not None else 0)

    def reserved_kv(self, batch: Batch | None = None, joining: int = 0) -> int:
        """KV bytes the batches and the kept session turns hold (with `joining` added to `batch`)."""
        return sum(self.kv_rows(b, joining if b is batch else 0) for b in self.batches) * self.kv_per_token

    def check_memory(self, capacity: int, batch: Batch) -> None:
        """Refuse a request of this capacity in `batch` if the KV budget cannot take it once the
        other batches' kept session turns are given up (least recently used first)."""
        if not self.kv_budget or not self.kv_per_token:
            return
        for other in sorted(self.batches, key=lambda b: b.last_used):
            if self.reserved_kv(batch, capacity) <= self.kv_budget:
                return
            if other.resident is not None and other.idle and other is not batch:
                self.evict_resident(other)
        held, after = self.reserved_kv(), self.reserved_kv(batch, capacity)
        if after > self.kv_budget and self.jobs:
            raise CodedError(BUSY, f"the running requests hold the KV cache budget "
                             f"({held >> 20} of {self.kv_budget >> 20} MiB; this one needs "
                             f"{(after - held) >> 20} MiB); retry when one has finished", reason="memory",
                             retry_after_ms=1000)

    def evict_resident(self, batch: Batch) -> None:
        if batch.resident is not None:
            batch.resident.request.close()
            batch.resident = None
            batch.cache_rows = 0

    def evict_all(self) -> None:
        for batch in self.batches:
            self.evict_resident(batch)

    def batch_for(self, message: EngineJob) -> Batch | None:
        """Where this job can start now: its session's kept turn, a batch that formed in this
        round with the same priority, an idle batch, a new one, or a batch whose kept turn
        can go (least recently used first). None: it waits."""
        session = message.payload.get("session")
        priority, alone = priority_of(message.payload), bool(message.payload.get("unbatched"))
        idle = [b for b in self.batches if b.idle and not b.running]
        if session is not None:
            for batch in idle:
                if batch.resident is not None and batch.resident.session == session:
                    return batch
        if not alone:
            for batch in self.batches:
                # a continued session turn (cached tokens) shares its engine with nothing (0.18)
                if (batch.jobs and not batch.running and not batch.alone and batch.priority == priority
                        and len(batch.jobs) < self.max_batch_size
                        and not any(j.cached_tokens for j in batch.jobs.values())):
                    return batch
        empty = [b for b in idle if b.resident is None]
        if empty:
            return empty[0]
        if len(self.batches) < self.max_batches:
            self.batches.append(self.new_batch())
            return self.batches[-1]
        kept = sorted((b for b in idle if b.resident is not None), key=lambda b: b.last_used)
        return kept[0] if kept else None

    def admit(self) -> None:
        """Start held jobs, highest priority first, first come first within one; one that
        finds no batch waits (and so do the ones of its priority behind it)."""
        self.held.sort(key=lambda m: -priority_of(m.payload))  # stable: arrival order within a priority
        waiting: list[EngineJob] = []
        blocked: set[int] = set()
        for message in self.held:
            priority = priority_of(message.payload)
            batch = None if priority in blocked else self.batch_for(message)
            if batch is None:
                blocked.add(priority)
                waiting.append(message)
            else:
                self.start(message, batch)
        self.held = waiting
        for message in waiting:  # the daemon counts them as queued, and tells their clients
            if message.job not in self.told_queued:
                self.told_queued.add(message.job)
                self.channel.event(message.job, "queued", {"reason": "all_batches_busy"})

    def start(self, message: EngineJob, batch: Batch) -> None:
        if message.job in self.told_queued:
            self.told_queued.discard(message.job)
            self.channel.event(message.job, "started", {})
        try:
            self.start_job(message, batch)
        except CodedError as exc:
            self.channel.fail(message.job, exc)
        except Exception as exc:  # noqa: BLE001 - reported to the client as `internal`
            self.channel.fail(message.job, CodedError(INTERNAL, f"{type(exc).__name__}: {exc}"))

    def cancel_job(self, job_id: str) -> None:
        held = next((m for m in self.held if m.job == job_id), None)
        if held is not None:
            self.held.remove(held)
            self.told_queued.discard(job_id)
            self.channel.fail(job_id, cancelled())
            return
        job = self.jobs.get(job_id)
        if job is not None and not job.cancelled:
            job.cancelled = True
            job.request.cancel_turn(job.turn)

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

    def finish_job(self, batch: Batch, job: Job, reason: str) -> None:
        tail = job.filter.finish()
        if tail:
            job.pending_text.append(tail)
        self.flush(job)
        del batch.jobs[job.id]
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
        # prompt plus the text the client saw, and it was alone in its batch
        keep = (job.session is not None and batch.idle and reason in ("EOS", "MAX_GENERATED_TOKENS")
                and not job.filter.stopped and job.request is not None and batch.resident is None)
        if keep:
            end = "<|end|>" if reason == "EOS" else ""
            batch.resident = Resident(job.session, job.request, job.prompt_text + text + end,
                                      job.prompt_tokens + job.generated, job.capacity)
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

    def step(self, batch: Batch) -> None:
        """One step of one batch: a token for each of its requests."""
        flags = self.og.EngineEventFlags
        batch.running = True
        touched: dict[str, Job] = {}
        for ev in batch.engine.run(batch.buffer):
            job = next((j for j in batch.jobs.values() if j.request == ev.request), None)
            if job is None:
                continue
            bits = ev.flags.value
            finish = ev.finish_reason.name if bits & flags.TURN_FINISHED.value else None
            if bits & flags.TOKEN.value:
                self.on_token(job, int(ev.token), finish is not None, finish)
                touched[job.id] = job
            if bits & flags.FAILED.value:
                touched.pop(job.id, None)
                del batch.jobs[job.id]
                job.request.close()
                self.channel.fail(job.id, CodedError(INTERNAL, f"engine failed the request: {ev.error_code.name}"))
            elif finish is not None:
                touched.pop(job.id, None)
                self.finish_job(batch, job, finish)
        for job in touched.values():
            self.flush(job)
        if batch.idle or not batch.engine.has_pending_requests():
            batch.running = False
        if batch.idle and batch.resident is None:
            batch.cache_rows = 0

    def step_round(self) -> None:
        """One step of each running batch of the highest priority present."""
        active = [b for b in self.batches if b.jobs and b.engine.has_pending_requests()]
        if not active:
            return
        top = max(b.priority for b in active)
        for batch in active:
            # a paused batch is stepped for a cancel, so that the client hears of it at once
            if batch.priority == top or any(job.cancelled for job in batch.jobs.values()):
                self.step(batch)

    # ---------------------------------------------------------------- loop

    def handle(self, message: Incoming) -> None:
        if isinstance(message, EngineJob):
            self.held.append(message)
        elif message["type"] == "cancel":
            self.cancel_job(message["job"])
        elif message["type"] == "forget":  # a privacy wipe: no session's KV stays
            self.evict_all()
        elif message["type"] == "stop":
            self.running = False

    def drain(self, timeout_s: float) -> None:
        waiting = self.channel.poll(int(timeout_s * 1000))
        while waiting:
            self.handle(self.channel.receive())
            waiting = self.channel.poll(0)

    def run(self) -> None:
        while self.running:
            busy = any(b.jobs for b in self.batches)
            self.drain(0 if busy else HEARTBEAT_S)
            if self.held and not busy and self.admission_window_s:
                # nothing runs: give requests sent at the same moment a chance to start together
                deadline = time.monotonic() + self.admission_window_s
                while self.running and time.monotonic() < deadline:
                    self.drain(max(0.0, deadline - time.monotonic()))
            self.admit()
            self.step_round()
            self.channel.heartbeat()
        self.evict_all()


def priority_of(payload: dict) -> int:
    return PRIORITIES.get(payload.get("priority") or "normal", PRIORITIES["normal"])


def serve(channel: WorkerChannel, spec: dict) -> None:
    """Engine-process entry point (see worker.child_main)."""
    serve_model(channel, spec, ChatWorker)
