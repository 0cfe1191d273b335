"""The soak's clients: each request retried as a careful client would, and an open-loop arrival process.

A request is retried after a failure the client can see and retry (``kinds.RETRIABLE``), waiting what
``Retry-After`` asks (at most ``MAX_WAIT_S``), up to ``ATTEMPTS`` attempts; a lost attempt (no answer,
truncated stream, wrong answer) ends it, since the client cannot tell what happened. Its final outcome:

* ``completed``: the first attempt was right;
* ``retried_completed``: a later attempt was right;
* ``failed_visible``: every attempt failed visibly and retriably (the client knows to come back later);
* ``failed_error``: an error answer that is not retriable (a 500, a 504, a 4xx);
* ``lost``: no answer, a truncated stream without an error event, or a wrong answer.

Arrivals are open loop (Poisson at a rate that the schedule may change, e.g. a burst): a slow server does
not slow the arrivals down, which is how real clients load a service.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import aiohttp

from bench.soak.kinds import LOST, OK, RETRIABLE, Attempt, Kind

ATTEMPTS = 4
MAX_WAIT_S = 5.0
ATTEMPT_TIMEOUT_S = 90.0
MAX_IN_FLIGHT = 256  # arrivals beyond it are counted as not sent (a guard for the machine, never reached at the rates used)

COMPLETED, RETRIED, FAILED_VISIBLE, FAILED_ERROR, LOST_OUTCOME = (
    "completed", "retried_completed", "failed_visible", "failed_error", "lost")
OUTCOMES = (COMPLETED, RETRIED, FAILED_VISIBLE, FAILED_ERROR, LOST_OUTCOME)


@dataclass
class RequestResult:
    kind: str
    started_s: float  # since the run's start
    ended_s: float = 0.0
    outcome: str = ""
    attempts: list[Attempt] = field(default_factory=list)
    phase: str = "load"  # load, burst, or the fault that sent it (long streams, slow readers)

    def summary(self) -> dict[str, Any]:
        return {"kind": self.kind, "started_s": round(self.started_s, 2), "ended_s": round(self.ended_s, 2),
                "outcome": self.outcome, "phase": self.phase,
                "attempts": [{"outcome": a.outcome, "status": a.status, "detail": a.detail[:160]} for a in self.attempts]}


def final_outcome(attempts: list[Attempt]) -> str:
    last = attempts[-1]
    if last.outcome == OK:
        return COMPLETED if len(attempts) == 1 else RETRIED
    if last.outcome in LOST:
        return LOST_OUTCOME
    return FAILED_VISIBLE if last.outcome == RETRIABLE else FAILED_ERROR


class Clients:
    """Sends requests and keeps every result; ``in_flight`` counts requests not finished yet."""

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.results: list[RequestResult] = []
        self.in_flight = 0
        self.not_sent: Counter[str] = Counter()
        self.tasks: set[asyncio.Task[None]] = set()
        timeout = aiohttp.ClientTimeout(total=ATTEMPT_TIMEOUT_S)
        # a connection per request at most; idle ones dropped before the server's keep-alive closes them
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=2), timeout=timeout)

    def now(self) -> float:
        return time.monotonic() - self.t0

    async def request(self, kind: Kind, phase: str = "load") -> RequestResult:
        result = RequestResult(kind.name, self.now(), phase=phase)
        self.results.append(result)
        self.in_flight += 1
        try:
            for attempt_no in range(ATTEMPTS):
                attempt = kind.check(await kind.send(self.session, phase))
                result.attempts.append(attempt)
                if attempt.outcome != RETRIABLE or attempt_no == ATTEMPTS - 1:
                    break
                await asyncio.sleep(min(attempt.retry_after_s or 1.0, MAX_WAIT_S))
        except Exception as exc:  # noqa: BLE001 - a bug in the client must show in the results, not stop the run
            result.attempts.append(Attempt("no_answer", None, f"client error {type(exc).__name__}: {exc}"))
        finally:
            self.in_flight -= 1
            result.ended_s = self.now()
            result.outcome = final_outcome(result.attempts)
        return result

    def spawn(self, kind: Kind, phase: str = "load") -> None:
        if self.in_flight >= MAX_IN_FLIGHT:
            self.not_sent[kind.name] += 1
            return
        task = asyncio.get_running_loop().create_task(self.request(kind, phase))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def open_loop(self, kinds: list[Kind], rate: Callable[[float], tuple[float, str]], until_s: float) -> None:
        """Poisson arrivals until ``until_s``; ``rate(now)`` gives the arrival rate and the phase's name."""
        weights = [k.weight for k in kinds]
        while self.now() < until_s:
            per_s, phase = rate(self.now())
            await asyncio.sleep(random.expovariate(per_s))
            if self.now() < until_s:
                self.spawn(random.choices(kinds, weights)[0], phase)

    async def drain(self, timeout_s: float) -> None:
        """Wait for the requests still running (each ends by its own timeouts well before ``timeout_s``)."""
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=timeout_s)

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await self.session.close()


async def measure_capacity(kinds: list[Kind], clients: Clients, seconds: float, concurrency: int) -> float:
    """Completed requests per second of the mix, closed loop at ``concurrency``: what the platform sustains here."""
    weights = [k.weight for k in kinds]
    done = 0
    began = time.monotonic()

    async def worker() -> None:
        nonlocal done
        while time.monotonic() - began < seconds:
            result = await clients.request(random.choices(kinds, weights)[0], phase="capacity")
            done += result.outcome == COMPLETED

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.monotonic() - began)
