"""What a replica tells the outside when its models load and unload.

``PoolEvents`` (the default) tells nobody, for hosts outside Ray (unit tests). ``ReplicaPoolEvents``
exports Prometheus metrics through Ray (loads, evictions, load seconds, loaded bytes per model) and
reports the replica's loaded models to Ray Serve's request router, the way ``@serve.multiplexed``
does, so requests naming a model go to a replica that already holds it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Iterable

from serve.deployments.model_slot import LOADING, READY

if TYPE_CHECKING:
    from serve.deployments.model_slot import ModelSlot

logger = logging.getLogger(__name__)

LOAD_BUCKETS_S = [0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600]


class PoolEvents:
    def load(self, slot: "ModelSlot", outcome: str, seconds: float | None = None) -> None:
        """A load ended: ``loaded``, ``failed`` or ``no_room``."""

    def eviction(self, slot: "ModelSlot", reason: str) -> None:
        """A model was unloaded (or put to sleep): evicted, keep_alive expired, admin request."""

    def changed(self, slots: Iterable["ModelSlot"]) -> None:
        """The set of loaded models changed."""


class ReplicaPoolEvents(PoolEvents):
    def __init__(self, report_to_router: bool) -> None:
        from ray.serve.metrics import Counter, Gauge, Histogram

        self.loads = Counter("modelhost_model_loads_total", description="Model loads by outcome (loaded, failed, no_room).",
                             tag_keys=("model", "outcome"))
        self.evictions = Counter("modelhost_model_evictions_total", description="Models unloaded or put to sleep, by reason.",
                                 tag_keys=("model", "reason"))
        self.load_seconds = Histogram("modelhost_model_load_seconds", description="Time to load (or wake) a model.",
                                      boundaries=LOAD_BUCKETS_S, tag_keys=("model",))
        self.loaded_bytes = Gauge("modelhost_model_loaded_bytes", description="Measured RAM of a loaded model (0 when unloaded).",
                                  tag_keys=("model",))
        self.loaded = Gauge("modelhost_model_loaded", description="1 while the model is loaded in this replica.", tag_keys=("model",))
        self._report_to_router = report_to_router

    def load(self, slot: "ModelSlot", outcome: str, seconds: float | None = None) -> None:
        self.loads.inc(1, tags={"model": slot.model_id, "outcome": outcome})
        if seconds is not None:
            self.load_seconds.observe(seconds, tags={"model": slot.model_id})

    def eviction(self, slot: "ModelSlot", reason: str) -> None:
        self.evictions.inc(1, tags={"model": slot.model_id, "reason": reason})

    def changed(self, slots: Iterable["ModelSlot"]) -> None:
        slots = list(slots)
        for slot in slots:
            self.loaded_bytes.set(slot.ram_bytes, tags={"model": slot.model_id})
            self.loaded.set(1 if slot.status == READY else 0, tags={"model": slot.model_id})
        if self._report_to_router:
            report_multiplexed_models([s.model_id for s in slots if s.status in (READY, LOADING)])


def report_multiplexed_models(model_ids: list[str]) -> None:
    """Tell Ray Serve which models this replica holds (what ``@serve.multiplexed`` reports), so a
    handle call with ``multiplexed_model_id`` prefers it. Ray's own module keeps this API private."""
    try:
        from ray.serve import get_replica_context
        from ray.serve._private.common import RequestRoutingInfo
        from ray.serve.context import _get_global_client

        replica_id = get_replica_context().replica_id
        _get_global_client().record_request_routing_info(
            RequestRoutingInfo(replica_id=replica_id, multiplexed_model_ids=model_ids))
    except Exception as exc:  # noqa: BLE001 - routing falls back to any replica
        logger.warning("could not report loaded models to Ray Serve's router: %s", exc)

