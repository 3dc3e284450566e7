"""Several clients at once (#12): the chat engine keeps every client moving. A request that
arrives while another answer streams starts at once in a batch of its own; priorities decide
which batches are stepped; the KV budget refuses a sequence with `busy` instead of swapping."""
from __future__ import annotations

import pytest

from edge_agent.client import EdgeAgentError
from edge_agent.engines.channel import EngineJob
from edge_agent.engines.genai_chat import ChatWorker

from .daemon_util import Daemon
from .test_daemon import base_sections, user, wait_for
from .test_hardening import Recorded


def worker_for(package, **spec) -> tuple[ChatWorker, Recorded]:
    channel = Recorded()
    return ChatWorker(channel, {"package": str(package), "threads": 1, **spec}), channel


def job(name: str, tokens: int, **fields) -> EngineJob:
    """A chat job that generates exactly `tokens` tokens (min_tokens: a random model's end-of-turn
    token comes wherever the CPU's rounding puts it)."""
    return EngineJob(name, {"messages": user(f"Tell me about {name}."), "max_tokens": tokens,
                            "min_tokens": tokens, **fields})


def finished(channel: Recorded) -> list[str]:
    return [sent[1] for sent in channel.sent if sent[0] in ("result", "fail")]


def test_a_request_that_arrives_while_another_streams_starts_at_once(int4_package, tmp_path):
    """Before: the static CPU engine admitted nothing into a running batch, so B's first token
    came only after A's whole answer. Now B starts in a batch of its own and the two are stepped
    in turn: B finishes while A is still generating."""
    d = Daemon(tmp_path, base_sections(int4_package))
    try:
        with d.client() as a_client, d.client() as b_client, d.client() as watcher:
            a = a_client.send("chat", messages=user("Read me a long story."), max_tokens=2000, min_tokens=2000)
            assert a_client.next_event(a, 60)["event"] == "accepted"
            while a_client.next_event(a, 60)["event"] != "delta":
                pass
            b = b_client.send("chat", messages=user("What time is it?"), max_tokens=8, min_tokens=8)
            while not (event := b_client.next_event(b, 60))["final"]:
                pass
            assert event["event"] == "result" and event["usage"]["generated_tokens"] == 8
            assert watcher.status()["inflight"] == 1  # A is still generating
            while not (event := a_client.next_event(a, 60))["final"]:
                pass
            assert event["event"] == "result" and event["usage"]["generated_tokens"] == 2000
    finally:
        d.stop()


def test_requests_that_arrive_together_share_one_batch(int4_package):
    worker, channel = worker_for(int4_package)
    for n in range(3):
        worker.handle(job(f"together-{n}", 4))
    worker.admit()
    assert [len(b.jobs) for b in worker.batches] == [3]  # one static batch: batching pays on a CPU too
    worker.handle(job("later", 4))
    worker.step_round()  # the batch runs now: it admits nothing more
    worker.admit()
    assert [len(b.jobs) for b in worker.batches] == [3, 1]
    while worker.jobs:
        worker.step_round()
    assert sorted(finished(channel)) == ["later", "together-0", "together-1", "together-2"]


def test_past_max_batches_a_request_waits_and_can_be_cancelled(int4_package):
    worker, channel = worker_for(int4_package, max_batches=2)
    for name in ("first", "second", "third"):
        worker.handle(job(name, 20))
        worker.admit()
        worker.step_round()
    assert [m.job for m in worker.held] == ["third"] and len(worker.batches) == 2
    worker.cancel_job("third")
    assert channel.sent[-1][:2] == ("fail", "third") and channel.sent[-1][2].code == "cancelled"
    worker.handle(job("fourth", 3))
    while worker.jobs or worker.held:
        worker.admit()
        worker.step_round()
    assert finished(channel) == ["third", "first", "second", "fourth"]


def test_priorities_decide_which_batches_are_stepped(int4_package):
    """Strict priority between batches: while a `high` answer runs, `normal` and `low` ones
    pause; a `low` one runs only when nothing of higher priority does."""
    worker, channel = worker_for(int4_package)
    worker.handle(job("normal", 40))
    worker.admit()
    for _ in range(3):
        worker.step_round()
    worker.handle(job("background", 5, priority="low"))
    worker.handle(job("urgent", 5, priority="high"))
    worker.admit()
    assert len(worker.batches) == 3  # different priorities never share a batch
    normal = worker.jobs["normal"]
    while "urgent" in worker.jobs:
        worker.step_round()
        assert normal.generated == 3 and worker.jobs["background"].generated == 0
    while worker.jobs:
        worker.step_round()
    assert finished(channel) == ["urgent", "normal", "background"]


def test_the_kv_budget_refuses_a_sequence_with_busy(int4_package):
    """Each running sequence reserves prompt + max_tokens of KV cache; one more that would pass
    the budget is refused with `busy`, reason `memory`, and fits again once the first is done."""
    worker, channel = worker_for(int4_package, kv_bytes_per_token=1000, kv_budget_bytes=400_000)
    worker.handle(job("long", 300))
    worker.admit()
    worker.step_round()
    worker.handle(job("refused", 200))
    worker.admit()
    kind, name, error = channel.sent[-1]
    assert (kind, name) == ("fail", "refused")
    assert error.code == "busy" and error.extra["reason"] == "memory", error.to_error()
    while worker.jobs:
        worker.step_round()
    worker.handle(job("later", 200))
    worker.admit()
    assert "later" in worker.jobs


def test_the_memory_budget_reaches_the_engine(int4_package, tmp_path):
    """models.memory_budget_mb less the weights is the KV budget: a budget that fits the weights and
    one full-context sequence (12 MiB on the tiny model) runs one long answer, refuses a second."""
    from edge_agent.models import open_package

    need = open_package(int4_package).memory_estimate_bytes()
    budget_mb = -(-need // (1 << 20))
    d = Daemon(tmp_path, base_sections(int4_package, models={"memory_budget_mb": budget_mb}))
    try:
        with d.client() as a_client, d.client() as b_client:
            a = a_client.send("chat", messages=user("A long answer."), max_tokens=3000, min_tokens=3000)
            while a_client.next_event(a, 60)["event"] != "delta":
                pass
            with pytest.raises(EdgeAgentError) as err:
                b_client.call("chat", messages=user("A second long answer."), max_tokens=2000)
            assert err.value.code == "busy" and err.value.details["reason"] == "memory"
            while not a_client.next_event(a, 60)["final"]:
                pass
            assert b_client.call("chat", messages=user("Now?"), max_tokens=2000, min_tokens=5)["usage"][
                "generated_tokens"] >= 5
    finally:
        d.stop()


def test_priority_and_min_tokens_are_chat_options(int4_package, tmp_path):
    d = Daemon(tmp_path, base_sections(int4_package))
    try:
        with d.client() as c:
            chat = c.describe()["services"]["chat"]
            assert chat["priorities"] == ["low", "normal", "high"] and chat["max_batches"] == 4
            assert c.call("chat", messages=user("hi"), max_tokens=6, min_tokens=6,
                          priority="high")["usage"]["generated_tokens"] == 6
            for fields, field in (({"priority": "urgent"}, "priority"), ({"min_tokens": -1}, "min_tokens"),
                                  ({"min_tokens": 10, "max_tokens": 5}, "min_tokens")):
                with pytest.raises(EdgeAgentError) as err:
                    c.call("chat", messages=user("hi"), **fields)
                assert err.value.code == "bad_request" and err.value.details["field"] == field
            wait_for(lambda: c.status()["inflight"] == 0)
    finally:
        d.stop()


@pytest.mark.parametrize("fields, priority", [
    ({}, "normal"),
    ({"priority": "low"}, "low"),
    ({"speak": {"priority": "important"}}, "high"),  # the voice assistant's answer: a person waits
    ({"speak": {"priority": "text"}}, "normal"),
    ({"speak": {"priority": "important"}, "priority": "low"}, "low"),  # said explicitly: kept
])
def test_the_priority_the_engine_gets(fields, priority):
    import zmq.asyncio

    from edge_agent import protocol as P
    from edge_agent.config import Config
    from edge_agent.services.chat import ChatJob, ChatService

    service = ChatService(Config(), zmq.asyncio.Context.instance(), lambda job, event: None)
    body = P.parse_request([P.encode_request("r1", "chat", messages=user("hi"), **fields)]).body
    payload, _ = service.payload(ChatJob(accepted=0.0, request=body, session=None, user_message="hi",
                                         messages=user("hi"), max_tokens=4))
    assert payload["priority"] == priority


def test_a_paused_request_is_cancelled_at_once(int4_package):
    worker, channel = worker_for(int4_package)
    worker.handle(job("background", 50, priority="low"))
    worker.admit()
    worker.step_round()
    worker.handle(job("urgent", 30, priority="high"))
    worker.admit()
    worker.step_round()
    worker.cancel_job("background")
    worker.step_round()
    assert finished(channel) == ["background"]
    assert next(s[2] for s in channel.sent if s[0] == "fail").code == "cancelled"
    assert "urgent" in worker.jobs


def test_a_kept_session_turn_gives_way_when_its_batch_is_needed(int4_package):
    worker, channel = worker_for(int4_package, max_batches=1)
    first = user("one")
    worker.handle(EngineJob("turn-1", {"messages": first, "session": "s", "max_tokens": 4}))
    worker.admit()
    while worker.jobs:
        worker.step_round()
    text = channel.sent[-1][2]["text"]
    assert worker.batches[0].resident is not None
    worker.handle(job("other", 4))
    worker.admit()
    assert worker.batches[0].resident is None  # the only batch was needed
    while worker.jobs:
        worker.step_round()
    second = first + [{"role": "assistant", "content": text}, {"role": "user", "content": "two"}]
    worker.handle(EngineJob("turn-2", {"messages": second, "session": "s", "max_tokens": 4}))
    worker.admit()
    while worker.jobs:
        worker.step_round()
    assert channel.sent[-1][2]["prompt_cache"] == "new"


def test_max_batch_size_caps_a_batch(int4_package):
    """chat.max_batch_size 1: requests that arrive together each get a batch of their own
    (prompts processed one at a time, which 0.18 on a small CPU does far faster than batched)."""
    worker, channel = worker_for(int4_package, max_batch_size=1)
    for n in range(3):
        worker.handle(job(f"together-{n}", 4))
    worker.admit()
    assert [len(b.jobs) for b in worker.batches] == [1, 1, 1]
    while worker.jobs:
        worker.step_round()
    assert sorted(finished(channel)) == ["together-0", "together-1", "together-2"]


def run_turn(worker: ChatWorker, channel: Recorded, name: str, messages: list, max_tokens: int) -> dict:
    worker.handle(EngineJob(name, {"messages": messages, "session": "s", "max_tokens": max_tokens,
                                   "min_tokens": max_tokens}))
    worker.admit()
    while worker.jobs:
        worker.step_round()
    assert channel.sent[-1][:2] == ("result", name), channel.sent[-1]
    return channel.sent[-1][2]


def test_a_request_holds_the_kv_it_can_use_and_a_session_its_reserve(int4_package):
    """0.18's static engine allocates a batch's whole KV cache up front, sized by the requests'
    session limits (the model's context by default: 2-5x the prompt time on the full-size model).
    A request's limit is its prompt plus max_tokens; a session's adds session_reserve_tokens, which
    a follow-up turn continues within, and a turn that outgrows it starts a new cache."""
    worker, channel = worker_for(int4_package, session_reserve_tokens=24)
    worker.handle(job("plain", 5))
    worker.admit()
    plain = worker.jobs["plain"]
    assert plain.capacity == plain.prompt_tokens + 5 < worker.context_length
    while worker.jobs:
        worker.step_round()

    messages = user("one")
    first = run_turn(worker, channel, "turn-1", messages, 4)
    kept = next(b.resident for b in worker.batches if b.resident is not None)
    assert kept.capacity == first["usage"]["prompt_tokens"] + 4 + 24
    messages = messages + [{"role": "assistant", "content": first["text"]}, {"role": "user", "content": "two"}]
    second = run_turn(worker, channel, "turn-2", messages, 4)
    assert second["prompt_cache"] == "reused"  # within the reserve
    assert second["usage"]["prompt_tokens"] + 4 <= kept.capacity
    messages = messages + [{"role": "assistant", "content": second["text"]}, {"role": "user", "content": "three"}]
    third = run_turn(worker, channel, "turn-3", messages, 40)
    assert third["prompt_cache"] == "new" and third["usage"]["generated_tokens"] == 40  # past it: a new cache
    messages = messages + [{"role": "assistant", "content": third["text"]}, {"role": "user", "content": "four"}]
    assert run_turn(worker, channel, "turn-4", messages, 4)["prompt_cache"] == "reused"


def test_the_kv_budget_counts_a_static_batch_as_rows_of_its_longest_request(int4_package):
    """Every row of a static batch's cache is as long as its longest request's limit: a short request
    joining a batch with a long one costs the long one's rows, and the budget sees that."""
    worker, channel = worker_for(int4_package, kv_bytes_per_token=1000)
    worker.handle(job("long", 300))
    worker.handle(job("short", 5))
    worker.admit()
    long, short = worker.jobs["long"], worker.jobs["short"]
    assert len(worker.batches[0].jobs) == 2
    assert worker.reserved_kv() == 2 * long.capacity * 1000 > (long.capacity + short.capacity) * 1000
    while worker.jobs:
        worker.step_round()
    assert worker.reserved_kv() == 0


def test_a_request_waiting_for_a_batch_is_queued_and_told_so(int4_package, tmp_path):
    """With every batch generating, a request waits inside the engine: its client gets `progress`
    with stage `queued`, and `status` counts it in queue_depth (it counted as running before)."""
    d = Daemon(tmp_path, base_sections(int4_package, chat={"max_batches": 1}))
    try:
        with d.client() as a_client, d.client() as b_client, d.client() as watcher:
            a = a_client.send("chat", messages=user("A long story."), max_tokens=3000, min_tokens=3000)
            while a_client.next_event(a, 60)["event"] != "delta":
                pass
            b = b_client.send("chat", messages=user("Me next."), max_tokens=4, min_tokens=4)
            assert b_client.next_event(b, 60)["event"] == "accepted"
            queued = b_client.next_event(b, 60)
            assert (queued["event"], queued["stage"], queued["reason"]) == ("progress", "queued", "all_batches_busy")
            assert watcher.status()["queue_depth"] == 1
            assert a_client.cancel(a)["cancelled"] is True
            while not (event := b_client.next_event(b, 60))["final"]:
                assert event["event"] == "delta"
            assert event["event"] == "result" and event["usage"]["generated_tokens"] == 4
            assert watcher.status()["queue_depth"] == 0
    finally:
        d.stop()
