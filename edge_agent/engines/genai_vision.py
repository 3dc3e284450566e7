"""The image-question engine, run inside an engine child process (see host.py).

A thin loop over onnxruntime-genai's phi3v pipeline. The images are prepared here
(phi3v_inputs.py: any crop budget; the runtime's own processor always uses 16 crops) and
given to a Generator, which runs the vision model, the embedding and the decoder. One question
at a time (the runtime's multimodal path has no batching engine); a cancel is checked between
tokens. Images arrive as binary frames and are checked here, in this process, before the
runtime sees them.

A question in a session leaves its Generator, and with it the KV cache of the images and the
conversation, for the session's next question: a follow-up about the same images appends only
its own tokens (no vision encoder, no image prefill), as chat sessions do. Up to `kept_turns`
conversations are kept, least recently used given up first; the KV they hold is sized by the
question plus `session_reserve_tokens`.

Tokens are chosen here from the Generator's logits and appended one by one, not with
`generate_next_token`: in onnxruntime-genai 0.18 a phi3v Generator that has generated a token
computes wrong logits for tokens appended after it (measured on the fp32 fixture: 0.11 off a
fresh prefill of the same ids; appended after appended tokens: exact to 1e-6), and appending is
what a follow-up question does.
"""
from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BAD_REQUEST, CONTEXT_EXCEEDED, INTERNAL, CodedError, cancelled
from ..images import load_image
from .channel import EngineJob
from .genai import load_model
from .phi3v_inputs import MAX_CROPS, generator_inputs, prepare_images, prompt_ids
from .worker import HEARTBEAT_S, Incoming, WorkerChannel, serve_model

DEFAULT_CROPS = 4  # the Phi-3.5-vision snapshot's num_crops
DEFAULT_KEPT_TURNS = 1
DEFAULT_SESSION_RESERVE_TOKENS = 1024
END_OF_TURN = "<|end|>"


@dataclass
class KeptTurn:
    """A finished session question whose Generator (and KV cache) waits for the next one."""
    key: str  # the session, its images and crop budget, and the sampling settings
    generator: Any  # og.Generator
    text: str  # the exact text of the conversation: the tokens in the KV cache and `pending`
    tokens: int  # tokens in the KV cache
    pending: list[int]  # the answer's last token, chosen but not yet run through the model
    capacity: int  # the Generator's max_length: the KV rows it holds
    images: dict  # image_tokens and crops of its prompt, for the usage of later questions


@dataclass
class Turn:
    """A question ready to generate: its Generator, the prompt text in it, and its token counts."""
    generator: Any  # og.Generator
    text: str
    capacity: int
    usage: dict
    reused: bool


class VisionWorker:
    def __init__(self, channel: WorkerChannel, spec: dict):
        import onnxruntime_genai as og

        self.og = og
        self.channel = channel
        package = Path(spec["package"])
        self.model = load_model(package, spec.get("threads") or None)
        self.tokenizer = og.Tokenizer(self.model)
        config = json.loads((package / "genai_config.json").read_text())
        self.context_length = int(config["search"]["max_length"])
        self.eos = set(int(t) for t in self.tokenizer.eos_token_ids)
        self.end_of_turn = [int(t) for t in self.tokenizer.encode(END_OF_TURN)]
        self.default_crops = int(spec.get("crops") or DEFAULT_CROPS)
        self.kept_turns = int(spec.get("kept_turns", DEFAULT_KEPT_TURNS))
        self.session_reserve = int(spec.get("session_reserve_tokens", DEFAULT_SESSION_RESERVE_TOKENS))
        self.kept: OrderedDict[str, KeptTurn] = OrderedDict()  # by session, least recently used first
        self.cancelled: set[str] = set()
        self.pending: list[Incoming] = []
        self.rng = np.random.default_rng()

    def info(self) -> dict:
        return {"context_length": self.context_length, "model_type": self.model.type}

    def prompt(self, messages: list[dict], images: int) -> str:
        """The chat template, with the image tags at the start of the first user message."""
        tags = "".join(f"<|image_{i + 1}|>\n" for i in range(images))
        shaped = []
        tagged = False
        for message in messages:
            if message["role"] == "user" and not tagged:
                message = {"role": "user", "content": tags + message["content"]}
                tagged = True
            shaped.append(message)
        return self.tokenizer.apply_chat_template(json.dumps(shaped), add_generation_prompt=True)

    def encode(self, text: str) -> list[int]:
        return [int(t) for t in self.tokenizer.encode(text)]

    def poll_control(self) -> None:
        """Between tokens: note cancels, keep other jobs for later."""
        while self.channel.poll(0):
            message = self.channel.receive()
            if isinstance(message, dict) and message["type"] == "cancel":
                self.cancelled.add(message["job"])
            elif isinstance(message, dict) and message["type"] == "forget":
                self.kept.clear()
            else:
                self.pending.append(message)

    @staticmethod
    def turn_key(message: dict, attachments: tuple[bytes, ...], crops: int) -> str:
        digest = hashlib.sha256()
        for data in attachments:
            digest.update(hashlib.sha256(data).digest())
        sampling = (message.get("temperature", 0.0), message.get("top_p", 1.0))
        return f"{message.get('session')}|{digest.hexdigest()}|{crops}|{sampling}"

    def start(self, message: dict, attachments: tuple[bytes, ...], crops: int, key: str) -> Turn:
        """A Generator ready to answer: the session's kept one (if `key` matches) with the new turn
        appended, or a new one with the images and the whole prompt."""
        og = self.og
        prompt = self.prompt(message["messages"], len(attachments))
        session = message.get("session")
        kept = self.kept.pop(session, None) if session is not None else None
        if kept is not None and kept.key == key and prompt.startswith(kept.text):
            # the suffix starts at a special token: the same ids as the whole text would have
            new = kept.pending + self.encode(prompt[len(kept.text):])
            if kept.tokens + len(new) + message["max_tokens"] <= kept.capacity:
                kept.generator.append_tokens(np.asarray(new, dtype=np.int32))
                usage = {"prompt_tokens": kept.tokens + len(new), "cached_tokens": kept.tokens, **kept.images}
                return Turn(kept.generator, prompt, kept.capacity, usage, reused=True)
        kept = None  # dropped here: its KV is freed before a new one is allocated
        images = [load_image(data).image for data in attachments]  # ImageError for anything the runtime should not see
        prepared = prepare_images(images, crops) if images else None
        ids = prompt_ids(self.encode, prompt, prepared.tokens if prepared else ())
        prompt_tokens = int(ids.shape[1])
        if message.get("cap_to_context"):  # transcription: as long as the context allows
            message["max_tokens"] = max(1, min(message["max_tokens"], self.context_length - prompt_tokens))
        if prompt_tokens + message["max_tokens"] > self.context_length:
            raise CodedError(CONTEXT_EXCEEDED, f"the images and question take {prompt_tokens} tokens; with "
                             f"max_tokens {message['max_tokens']} that exceeds the context of {self.context_length}",
                             field="question")
        capacity = prompt_tokens + message["max_tokens"]
        if session is not None and self.kept_turns:
            capacity = min(self.context_length, capacity + self.session_reserve)
        while len(self.kept) >= max(1, self.kept_turns):  # room for this one's KV, oldest first
            self.kept.popitem(last=False)
        params = og.GeneratorParams(self.model)
        params.set_search_options(max_length=capacity)
        generator = og.Generator(self.model, params)
        generator.set_inputs(generator_inputs(og, ids, prepared))
        usage = {"prompt_tokens": prompt_tokens, "cached_tokens": 0,
                 "image_tokens": sum(prepared.tokens) if prepared else 0,
                 "crops": list(prepared.crops) if prepared else []}
        return Turn(generator, prompt, capacity, usage, reused=False)

    def choose(self, logits: np.ndarray, temperature: float, top_p: float) -> int:
        """The next token: the most likely, or sampled with temperature and nucleus (top_p)."""
        if temperature <= 0:
            return int(np.argmax(logits))
        scaled = logits.astype(np.float64) / temperature
        probs = np.exp(scaled - scaled.max())
        probs /= probs.sum()
        order = np.argsort(-probs)
        if top_p < 1.0:
            order = order[:int(np.searchsorted(np.cumsum(probs[order]), top_p)) + 1]
        chosen = probs[order] / probs[order].sum()
        return int(self.rng.choice(order, p=chosen))

    def answer(self, request: EngineJob) -> None:
        job, message, attachments = request.job, dict(request.payload), request.attachments
        crops = int(message.get("crops") or self.default_crops)
        if not 1 <= crops <= MAX_CROPS:
            raise CodedError(BAD_REQUEST, f"crops must be 1 to {MAX_CROPS}", field="crops")
        started = time.monotonic()
        key = self.turn_key(message, attachments, crops)  # hashes the images: once per question
        turn = self.start(message, attachments, crops, key)
        generator = turn.generator
        temperature, top_p = float(message.get("temperature", 0.0)), float(message.get("top_p", 1.0))
        stream = self.tokenizer.create_stream()
        text, generated, first, finish, token = [], 0, None, "length", -1
        logits = generator.get_logits()
        while generated < message["max_tokens"]:
            token = self.choose(logits.reshape(-1), temperature, top_p)
            first = first or time.monotonic()
            generated += 1
            if token in self.eos:
                finish = "stop"
                break
            piece = stream.decode(token)
            text.append(piece)
            self.channel.event(job, "delta", {"text": piece, "tokens": 1})
            self.poll_control()
            if job in self.cancelled:
                self.cancelled.discard(job)
                self.channel.fail(job, cancelled())
                return
            if generated < message["max_tokens"]:  # the last token is run only if the session goes on
                generator.append_tokens(np.asarray([token], dtype=np.int32))
                logits = generator.get_logits()
        now = time.monotonic()
        answer = "".join(text)
        # keep the Generator for the session's next question if it holds exactly the prompt and
        # the answer the client saw (ended by the template's end-of-turn token, or cut short)
        session = message.get("session")
        if session is not None and self.kept_turns and (finish == "length" or [token] == self.end_of_turn):
            end = END_OF_TURN if finish == "stop" else ""
            self.kept[session] = KeptTurn(key, generator,
                                          turn.text + answer + end, int(generator.token_count()), [token],
                                          turn.capacity,
                                          {"image_tokens": turn.usage["image_tokens"], "crops": turn.usage["crops"]})
        decode = now - first if first else 0
        usage = {**turn.usage, "new_prompt_tokens": turn.usage["prompt_tokens"] - turn.usage["cached_tokens"],
                 "generated_tokens": generated,
                 "engine_ttft_ms": round((first - started) * 1000, 1) if first else None,
                 "tokens_per_s": round((generated - 1) / decode, 2) if generated > 1 and decode else None,
                 "engine_total_ms": round((now - started) * 1000, 1)}
        self.channel.result(job, {"text": answer, "finish_reason": finish,
                                  "prompt_cache": "reused" if turn.reused else "new", "usage": usage})

    def run(self) -> None:
        while True:
            if not self.pending:
                if not self.channel.poll(int(HEARTBEAT_S * 1000)):
                    self.channel.heartbeat()
                    continue
                self.pending.append(self.channel.receive())
            message = self.pending.pop(0)
            if not isinstance(message, EngineJob):
                if message["type"] == "stop":
                    return
                if message["type"] == "forget":  # a privacy wipe: no conversation's KV stays
                    self.kept.clear()
                continue  # a cancel for a job that already ended
            if message.job in self.cancelled:
                self.cancelled.discard(message.job)
                self.channel.fail(message.job, cancelled())
                continue
            try:
                self.answer(message)
            except CodedError as exc:
                self.channel.fail(message.job, exc)
            except Exception as exc:  # noqa: BLE001 - reported, the worker lives on
                self.channel.fail(message.job, CodedError(INTERNAL, f"{type(exc).__name__}: {exc}"))


def serve(channel: WorkerChannel, spec: dict) -> None:
    serve_model(channel, spec, VisionWorker)
