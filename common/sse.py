"""Server-sent events framing, shared by every streaming endpoint."""

from __future__ import annotations

import json
from typing import Any

SSE_DONE = b"data: [DONE]\n\n"
# names the data of a stream's last event (``[DONE]``) on streams that end with one
SENTINEL_HEADER = "x-sse-sentinel"


def sse_event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"
