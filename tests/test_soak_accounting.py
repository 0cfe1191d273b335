"""The soak's judgement of one attempt and its accounting of a run (``bench/soak/``), on made-up answers."""

from __future__ import annotations

import json

from bench.soak.client import RequestResult, final_outcome
from bench.soak.faults import FaultResult
from bench.soak.kinds import LOST, OK, RETRIABLE, TRUNCATED, WRONG, Attempt, Kind, _judge_stream
from bench.soak.report import account


def events(*payloads: dict, done: bool = True) -> list[bytes]:
    return [json.dumps(p).encode() for p in payloads] + ([b"[DONE]"] if done else [])


CONTENT = {"choices": [{"delta": {"content": "Paris"}, "finish_reason": None}]}
FINISH = {"choices": [{"delta": {}, "finish_reason": "stop"}]}
ERROR = {"error": {"type": "model_not_ready", "message": "retry", "param": None, "code": None}}


def test_a_stream_is_complete_only_with_its_finish_event_and_done() -> None:
    assert _judge_stream(events(CONTENT, FINISH), "Paris", 0.1).outcome == OK
    assert _judge_stream(events(CONTENT, ERROR), "Paris", 0.1).outcome == RETRIABLE  # the contract's final error event
    assert _judge_stream(events(CONTENT), "Paris", 0.1).outcome == TRUNCATED  # [DONE] but never finished
    assert _judge_stream(events(CONTENT, FINISH, done=False), "Paris", 0.1).outcome == TRUNCATED
    assert _judge_stream(events(CONTENT, {"error": "bare"}), "", None).outcome == TRUNCATED  # not the contract's shape


def test_answers_are_held_to_the_reference() -> None:
    ocr = Kind("infer_ocr", "ocr", 1, send=None, reference="HELLO\nWORLD")  # type: ignore[arg-type]
    assert ocr.check(Attempt(OK, 200, answer="hello world")).outcome == OK
    assert ocr.check(Attempt(OK, 200, answer="HELLO WORD")).outcome == WRONG
    llm = Kind("chat", "llm", 1, send=None, reference="The capital of France is Paris.", exact=False)  # type: ignore[arg-type]
    assert llm.check(Attempt(OK, 200, answer="Paris, of course.")).outcome == OK
    assert llm.check(Attempt(OK, 200, answer="Lyon.")).outcome == WRONG


def test_outcomes_and_fault_windows() -> None:
    ok, retriable, lost = Attempt(OK), Attempt(RETRIABLE, 503), Attempt(LOST[0])
    assert [final_outcome(a) for a in ([ok], [retriable, ok], [retriable, retriable], [Attempt("error", 500)], [retriable, lost])] == [
        "completed", "retried_completed", "failed_visible", "failed_error", "lost"]
    results = [RequestResult("chat", 1.0, 2.0, "completed"), RequestResult("chat", 10.0, 12.0, "failed_visible"),
               RequestResult("chat", 30.0, 31.0, "lost"), RequestResult("chat", 0.5, 0.6, "lost", phase="capacity")]
    acc = account(results, [FaultResult("model_replica_sigkill", at_s=9.0, recovery_s=4.0)], end_s=40.0)
    assert acc["totals"] == {"requests": 3, "completed": 1, "retried_completed": 0, "failed_visible": 1, "failed_error": 0, "lost": 1}
    assert acc["failures_outside_fault_windows"] == {"failed_visible": 0, "failed_error": 0, "lost": 1}  # window 9-18 s
