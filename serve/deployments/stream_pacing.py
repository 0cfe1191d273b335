"""How long a model replica's streams wait between batches: longer as more of them run at once.

Each batch is one message across the hop and one SSE event through the router, the front door and the client,
and on a small machine that CPU comes out of the model's. One stream at 0.1 s reads as smooth text and costs
little; eight streams at 0.1 s send eight times the events while each gets an eighth of the tokens, so a
batch carries one or two. The replica's streams together therefore aim at ``events_per_s`` messages a second:
with ``n`` streams running, each waits ``n / events_per_s`` between batches, never less than ``min_interval_s``
nor more than ``max_interval_s``. The first chunk still leaves at once (time to first token is unchanged), and
the last as soon as the stream ends. Measured with AMX on 2 cores, 8 streams against llama-server in one
rotation: 0.90x at 0.05 s, 0.94x at 0.1 s, 1.03x at 0.2 s (docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator


@dataclass(frozen=True)
class StreamPacing:
    """The replica's settings (``router_config.performance``): ``stream_interval_s``, ``stream_interval_max_s``,
    ``stream_events_per_s``."""

    min_interval_s: float
    max_interval_s: float
    events_per_s: float


class StreamPacer:
    """The replica's running streams, and the interval each waits now."""

    def __init__(self, pacing: StreamPacing) -> None:
        self.pacing = pacing
        self.running = 0

    def interval_s(self) -> float:
        p = self.pacing
        return max(p.min_interval_s, min(p.max_interval_s, self.running / p.events_per_s))

    @contextlib.contextmanager
    def stream(self) -> Iterator[None]:
        """One stream running for the block."""
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1
