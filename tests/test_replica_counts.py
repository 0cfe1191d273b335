"""Unit tests of how the router uses replica counts (no Ray): scale-to-zero status, lost replicas."""

from __future__ import annotations

import asyncio
import logging
import time
from types import SimpleNamespace
from typing import Any

import pytest

from common.errors import ModelNotReadyError
from serve.router.model_directory import ModelDirectory, ModelEntry
from serve.router.replica_counts import ReplicaCounts, Replicas, _count
from tests import fake_engines  # noqa: F401 - registers FAKE_ECHO, the entries' type


class FixedCounts(ReplicaCounts):
    """Counts set by the test instead of read from the Serve controller."""

    def __init__(self, counts: dict[str, Replicas]) -> None:
        super().__init__(app_name=None)
        self.counts = counts
        self.ever_running = {name for name, c in counts.items() if c.running}

    async def get(self, fresher_than: float | None = None) -> dict[str, Replicas]:
        self.asked_fresh = fresher_than is not None
        return self.counts

    def cached(self) -> dict[str, Replicas]:
        return self.counts

    def recent(self) -> dict[str, Replicas]:
        return self.counts


class NeverCalled:
    """A deployment handle that fails the test if the router calls it."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the router called {name} on a deployment it should not wake")


def entry(model_id: str, **deployment_config: Any) -> ModelEntry:
    return ModelEntry(model_id, "FAKE_ECHO", f"{model_id}-d", "none", {}, deployment_config)


def directory(counts: dict[str, Replicas], *entries: ModelEntry) -> ModelDirectory:
    return ModelDirectory(list(entries), {e.deployment: NeverCalled() for e in entries}, 1.0, FixedCounts(counts))


def test_scaled_to_zero_is_reported_without_calling_the_deployment() -> None:
    zero = entry("zero", autoscaling_config={"min_replicas": 0, "max_replicas": 1})
    [model] = asyncio.run(directory({"zero-d": Replicas(running=0, target=0)}, zero).describe_all())
    assert model["status"] == "scaled_to_zero" and model["replicas"] == {"running": 0, "target": 0, "starting": 0}


def test_a_scale_to_zero_deployment_being_scaled_down_is_not_called_and_its_counts_are_fresh() -> None:
    """Its last replica is stopping (target 0): a status call would queue for a replica and wake it again."""
    zero = entry("zero", autoscaling_config={"min_replicas": 0, "max_replicas": 1})
    d = directory({"zero-d": Replicas(running=1, target=0)}, zero)
    assert asyncio.run(d.describe("zero"))["status"] == "scaled_to_zero"
    assert d.replica_counts.asked_fresh  # not the counts cached a second ago, when it still had a target of 1


class CountingController(ReplicaCounts):
    """Counts whose every read from the controller is counted (and takes a moment)."""

    def __init__(self) -> None:
        super().__init__(app_name=None, ttl_s=60)
        self.fetches = 0

    async def _fetch(self) -> dict[str, Replicas]:
        self.fetches += 1
        await asyncio.sleep(0.01)
        return {"d": Replicas(running=self.fetches, target=1)}


def test_fresh_counts_are_read_again_within_the_ttl_and_shared_by_concurrent_callers() -> None:
    async def scenario() -> None:
        counts = CountingController()
        await counts.get()
        await counts.get()
        assert counts.fetches == 1  # cached within the TTL
        fresh = await counts.get(fresher_than=time.monotonic())
        assert counts.fetches == 2 and fresh["d"].running == 2
        now = time.monotonic()
        await asyncio.gather(*(counts.get(fresher_than=now) for _ in range(10)))
        assert counts.fetches == 3  # one read, started after they asked, answers them all

    asyncio.run(scenario())


class ScriptedController(ReplicaCounts):
    """Counts read from a controller that answers ``self.answer``; every read is counted."""

    def __init__(self, answer: Replicas) -> None:
        super().__init__(app_name=None, ttl_s=1.0, steady_ttl_s=30.0)
        self.answer, self.fetches = answer, 0

    async def _fetch(self) -> dict[str, Replicas]:
        self.fetches += 1
        return {"d": self.answer}

    async def read_on_the_request_path(self, seconds_later: float) -> None:
        """A request ``seconds_later`` than the last read (the clock moved back by hand): the refresh it may start."""
        self._fetched_at -= seconds_later
        self.cached()
        if self._refresh is not None:
            await self._refresh


def test_the_request_path_reads_steady_counts_rarely_and_short_ones_again_soon() -> None:
    """Each read makes the controller build the app's whole details: under traffic, only when something changes."""
    async def scenario() -> None:
        counts = ScriptedController(Replicas(running=1, target=1, running_ids=("r1",)))
        await counts.get()
        await counts.read_on_the_request_path(5)
        assert counts.fetches == 1 and counts.recent()["d"].running_ids == ("r1",)  # every deployment at its target
        await counts.get()
        assert counts.fetches == 2  # /v1/models never shows counts older than ttl_s
        counts.answer = Replicas(running=0, target=1)
        await counts.read_on_the_request_path(31)
        assert counts.fetches == 3 and counts.path_ttl_s() == 1.0  # short of its target: read again soon
        await counts.read_on_the_request_path(2)
        assert counts.fetches == 4
        counts._fetched_at -= 2
        assert counts.recent() == {}  # old counts of a deployment short of replicas say nothing

    asyncio.run(scenario())


def test_a_deployment_that_lost_all_replicas_is_503_but_scale_to_zero_is_woken() -> None:
    lost, zero = entry("lost"), entry("zero", autoscaling_config={"min_replicas": 0, "max_replicas": 1})
    d = directory({"lost-d": Replicas(running=1, target=1), "zero-d": Replicas(running=1, target=1)}, lost, zero)
    d.replica_counts.counts = {"lost-d": Replicas(running=0, target=1), "zero-d": Replicas(running=0, target=1)}
    with pytest.raises(ModelNotReadyError):
        d.resolve("lost", "/v1/infer", "model_id")
    assert isinstance(d.resolve("zero", "/v1/infer", "model_id").backend, NeverCalled)


def test_a_waiting_request_is_released_when_its_deployment_loses_its_replicas() -> None:
    d = directory({"lost-d": Replicas(running=1, target=1)}, entry("lost"))

    async def scenario() -> None:
        never = asyncio.get_running_loop().create_future()
        closed = []

        async def chunks() -> Any:
            try:
                yield await never
            finally:
                closed.append(True)

        watched = d.watch_first_chunk(d.get("lost"), chunks(), poll_s=0.01)
        waiting = asyncio.ensure_future(anext(watched))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        d.replica_counts.counts = {"lost-d": Replicas(running=0, target=1)}
        with pytest.raises(ModelNotReadyError):
            await asyncio.wait_for(waiting, 5)
        assert never.cancelled() and closed == [True]

    asyncio.run(scenario())


def test_counts_from_serve_instance_details() -> None:
    details = {"target_num_replicas": 3, "replicas": [{"state": "RUNNING", "replica_id": "a1"}, {"state": "STARTING", "replica_id": "b2"},
                                                      {"state": "STOPPING", "replica_id": "c3"}]}
    assert _count(details) == Replicas(running=1, target=3, starting=1, running_ids=("a1",))


class SlowAfterFirstAnswer:
    """A deployment that answers its first status call, then is too busy to answer in time (a load holds it)."""

    def __init__(self) -> None:
        self.calls = 0

    async def get_config(self) -> dict[str, Any]:
        self.calls += 1
        if self.calls > 1:
            await asyncio.sleep(5)
        return {"pid": 1, "models": [{"model_id": "busy", "status": "ready", "error": None}]}


def test_a_busy_replica_keeps_its_last_known_status_with_its_age() -> None:
    busy = entry("busy")
    models = ModelDirectory([busy], {"busy-d": SlowAfterFirstAnswer()}, 0.05, FixedCounts({"busy-d": Replicas(1, 1)}))

    async def twice() -> tuple[dict[str, Any], dict[str, Any]]:
        return await models.describe("busy"), await models.describe("busy")

    first, second = asyncio.run(twice())
    assert first["status"] == "ready" and "status_age_s" not in first
    assert second["status"] == "ready" and second["status_age_s"] >= 0  # not "loading" because it was slow once


class FlakyController(ReplicaCounts):
    """The controller's answers in turn: an exception (a timeout) or Serve's instance details."""

    def __init__(self, answers: list[Any]) -> None:
        super().__init__("default", ttl_s=0.0)
        self.answers = answers

    def _controller_handle(self) -> Any:
        answer = self.answers.pop(0)

        async def reply() -> dict[str, Any]:
            if isinstance(answer, BaseException):
                raise answer
            return answer

        return SimpleNamespace(get_serve_instance_details=SimpleNamespace(remote=reply))


def test_a_controller_that_keeps_failing_is_reported_once_and_its_return_once(caplog: pytest.LogCaptureFixture) -> None:
    details = {"applications": {"default": {"deployments": {"llm": {"target_num_replicas": 1, "replicas": [
        {"replica_id": "r1", "state": "RUNNING"}]}}}}}
    counts = FlakyController([TimeoutError(), TimeoutError(), TimeoutError(), details, TimeoutError()])

    async def scenario() -> list[dict[str, Replicas]]:
        return [await counts.get() for _ in range(5)]

    with caplog.at_level(logging.INFO, logger="serve.router.replica_counts"):
        answers = asyncio.run(scenario())
    assert [bool(a) for a in answers] == [False, False, False, True, False]
    assert answers[3]["llm"].running_ids == ("r1",)
    said = [(r.levelname, r.getMessage().split(" (")[0]) for r in caplog.records]
    assert said == [("WARNING", "replica counts unavailable"), ("INFO", "replica counts available again"),
                    ("WARNING", "replica counts unavailable")]
