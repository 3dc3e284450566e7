"""The image-question engine, run inside an engine child process (see host.py).

A thin loop over onnxruntime-genai's phi3v pipeline: the MultiModalProcessor turns the prompt
and the images into inputs, a Generator streams the answer. One question at a time (the
runtime's multimodal path has no batching engine); a cancel is checked between tokens.
Images arrive as binary frames and are checked here, in this process, before the runtime
sees them.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from ..errors import CONTEXT_EXCEEDED, INTERNAL, CodedError, cancelled
from ..images import load_image
from .channel import EngineJob
from .genai import load_model
from .worker import HEARTBEAT_S, Incoming, WorkerChannel, serve_model


class VisionWorker:
    def __init__(self, channel: WorkerChannel, spec: dict):
        import onnxruntime_genai as og

        self.og = og
        self.channel = channel
        self.model = load_model(Path(spec["package"]), spec.get("threads") or None)
        self.processor = self.model.create_multimodal_processor()
        self.tokenizer = og.Tokenizer(self.model)
        config = json.loads((Path(spec["package"]) / "genai_config.json").read_text())
        self.context_length = int(config["search"]["max_length"])
        self.eos = set(int(t) for t in self.tokenizer.eos_token_ids)
        self.cancelled: set[str] = set()
        self.pending: list[Incoming] = []

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

    def poll_control(self) -> None:
        """Between tokens: note cancels, keep other jobs for later."""
        while self.channel.poll(0):
            message = self.channel.receive()
            if isinstance(message, dict) and message["type"] == "cancel":
                self.cancelled.add(message["job"])
            else:
                self.pending.append(message)

    def answer(self, request: EngineJob) -> None:
        og = self.og
        job, message, attachments = request.job, dict(request.payload), request.attachments
        for data in attachments:
            load_image(data)  # ImageError for anything the runtime should not see
        started = time.monotonic()
        prompt = self.prompt(message["messages"], len(attachments))
        images = og.Images.open_bytes(*attachments) if attachments else None
        inputs = self.processor(prompt, images=images)
        prompt_tokens = int(inputs["input_ids"].as_numpy().shape[1])
        image_tokens = int((inputs["input_ids"].as_numpy() < 0).sum())
        if message.get("cap_to_context"):  # transcription: as long as the context allows
            message["max_tokens"] = max(1, min(message["max_tokens"], self.context_length - prompt_tokens))
        if prompt_tokens + message["max_tokens"] > self.context_length:
            raise CodedError(CONTEXT_EXCEEDED, f"the images and question take {prompt_tokens} tokens; with "
                             f"max_tokens {message['max_tokens']} that exceeds the context of {self.context_length}",
                             field="question")
        params = og.GeneratorParams(self.model)
        temperature = float(message.get("temperature", 0.0))
        search = {"max_length": prompt_tokens + message["max_tokens"], "do_sample": temperature > 0}
        if temperature > 0:
            search.update(temperature=temperature, top_p=float(message.get("top_p", 1.0)))
        params.set_search_options(**search)
        generator = og.Generator(self.model, params)
        generator.set_inputs(inputs)
        stream = self.tokenizer.create_stream()
        text, generated, first, finish = [], 0, None, "length"
        while not generator.is_done():
            generator.generate_next_token()
            token = int(generator.get_next_tokens()[0])
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
            if generated >= message["max_tokens"]:
                break
        now = time.monotonic()
        decode = now - first if first else 0
        self.channel.result(job, {
            "text": "".join(text), "finish_reason": finish,
            "usage": {"prompt_tokens": prompt_tokens, "image_tokens": image_tokens, "generated_tokens": generated,
                      "engine_ttft_ms": round((first - started) * 1000, 1) if first else None,
                      "tokens_per_s": round((generated - 1) / decode, 2) if generated > 1 and decode else None,
                      "engine_total_ms": round((now - started) * 1000, 1)}})

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
