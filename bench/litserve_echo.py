"""Baseline: the fake echo engine served by LitServe (``litserve==0.2.19``), as its docs would have it.

Two LitAPIs on one server: ``POST /v1/infer`` answers JSON, ``POST /v1/infer/stream`` streams the
same SSE events as the platform. Async APIs (``enable_async``): the engine is an async generator.
Run: ``python -m bench.litserve_echo --port 8002``.
"""

from __future__ import annotations

import argparse
from typing import Any, AsyncIterator

import litserve as ls

from bench.echo import echo_answer, echo_chunks, echo_engine, echo_request
from common.sse import SSE_DONE, sse_event
from servers.base_engine import EngineRequest

REQUEST_TIMEOUT_S = 600  # LitServe's default (30 s) would turn queueing under load into 504s


class EchoAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        self.engine = echo_engine()

    # `request` stays unannotated: only then does LitServe parse the body as JSON
    async def decode_request(self, request) -> EngineRequest:  # type: ignore[no-untyped-def]
        return echo_request(request)

    async def predict(self, request: EngineRequest) -> dict[str, Any]:
        return await echo_answer(self.engine, request)

    async def encode_response(self, output: dict[str, Any]) -> dict[str, Any]:
        return output


class EchoStreamAPI(EchoAPI):
    async def predict(self, request: EngineRequest) -> AsyncIterator[dict[str, Any]]:  # type: ignore[override]
        async for chunk in echo_chunks(self.engine, request):
            yield chunk

    async def encode_response(self, chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[str]:  # type: ignore[override]
        async for chunk in chunks:
            yield sse_event(chunk).decode()
        yield SSE_DONE.decode()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    apis = [
        EchoAPI(api_path="/v1/infer", enable_async=True),
        EchoStreamAPI(api_path="/v1/infer/stream", stream=True, enable_async=True),
    ]
    server = ls.LitServer(apis, accelerator="cpu", workers_per_device=1, timeout=REQUEST_TIMEOUT_S)
    server.run(host="127.0.0.1", port=port, generate_client_file=False, log_level="warning", num_api_servers=1)


if __name__ == "__main__":
    main()
