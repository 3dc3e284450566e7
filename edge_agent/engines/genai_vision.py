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

import zmq

from ..images import ImageError, load_image
from .genai import load_model
from .host import HEARTBEAT_S, receive, worker_loop_sender


class VisionWorker:
    def __init__(self, sock: zmq.Socket, spec: dict):
        import onnxruntime_genai as og

        self.og = og
        self.sock = sock
        self.send, self.heartbeat = worker_loop_sender(sock)
        self.model = load_model(Path(spec["package"]), spec.get("threads") or None)
        self.processor = self.model.create_multimodal_processor()
        self.tokenizer = og.Tokenizer(self.model)
        config = json.loads((Path(spec["package"]) / "genai_config.json").read_text())
        self.context_length = int(config["search"]["max_length"])
        self.eos = set(int(t) for t in self.tokenizer.eos_token_ids)
        self.poller = zmq.Poller()
        self.poller.register(sock, zmq.POLLIN)
        self.cancelled: set[str] = set()
        self.pending: list[dict] = []

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
        while self.poller.poll(0):
            message = receive(self.sock)
            if message["type"] == "cancel":
                self.cancelled.add(message["job"])
            else:
                self.pending.append(message)

    def answer(self, message: dict) -> None:
        og = self.og
        job = message["job"]
        for data in message["attachments"]:
            load_image(data)  # ImageError for anything the runtime should not see
        started = time.monotonic()
        prompt = self.prompt(message["messages"], len(message["attachments"]))
        images = og.Images.open_bytes(*message["attachments"]) if message["attachments"] else None
        inputs = self.processor(prompt, images=images)
        prompt_tokens = int(inputs["input_ids"].as_numpy().shape[1])
        image_tokens = int((inputs["input_ids"].as_numpy() < 0).sum())
        if message.get("cap_to_context"):  # transcription: as long as the context allows
            message["max_tokens"] = max(1, min(message["max_tokens"], self.context_length - prompt_tokens))
        if prompt_tokens + message["max_tokens"] > self.context_length:
            raise ImageError("context_exceeded", f"the images and question take {prompt_tokens} tokens; with "
                             f"max_tokens {message['max_tokens']} that exceeds the context of {self.context_length}")
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
            self.send({"type": "event", "job": job, "kind": "delta", "final": False, "text": piece, "tokens": 1})
            self.poll_control()
            if job in self.cancelled:
                self.cancelled.discard(job)
                self.send({"type": "event", "job": job, "kind": "error", "final": True, "code": "cancelled",
                           "message": "cancelled", "reason": "cancel"})
                return
            if generated >= message["max_tokens"]:
                break
        now = time.monotonic()
        decode = now - first if first else 0
        self.send({"type": "event", "job": job, "kind": "done", "final": True, "text": "".join(text),
                   "finish_reason": finish,
                   "usage": {"prompt_tokens": prompt_tokens, "image_tokens": image_tokens,
                             "generated_tokens": generated,
                             "ttft_ms": round((first - started) * 1000, 1) if first else None,
                             "tokens_per_s": round((generated - 1) / decode, 2) if generated > 1 and decode else None,
                             "total_ms": round((now - started) * 1000, 1)}})

    def run(self) -> None:
        while True:
            if not self.pending:
                if not self.poller.poll(int(HEARTBEAT_S * 1000)):
                    self.heartbeat()
                    continue
                self.pending.append(receive(self.sock))
            message = self.pending.pop(0)
            if message["type"] == "stop":
                return
            if message["type"] == "cancel":
                continue  # for a job that already ended
            job = message["job"]
            if job in self.cancelled:
                self.cancelled.discard(job)
                self.send({"type": "event", "job": job, "kind": "error", "final": True, "code": "cancelled",
                           "message": "cancelled", "reason": "cancel"})
                continue
            try:
                self.answer(message)
            except ImageError as exc:
                self.send({"type": "event", "job": job, "kind": "error", "final": True, "code": exc.code,
                           "message": exc.message, "field": "image" if exc.code != "context_exceeded" else "question"})
            except Exception as exc:  # noqa: BLE001 - reported, the worker lives on
                self.send({"type": "event", "job": job, "kind": "error", "final": True, "code": "internal",
                           "message": f"{type(exc).__name__}: {exc}"})


def serve(sock: zmq.Socket, spec: dict) -> None:
    send, _ = worker_loop_sender(sock)
    try:
        worker = VisionWorker(sock, spec)
    except Exception as exc:  # noqa: BLE001
        send({"type": "load_failed", "error": f"cannot load {spec.get('package')}: {exc}"})
        return
    send({"type": "ready", "context_length": worker.context_length, "model_type": worker.model.type})
    worker.run()
