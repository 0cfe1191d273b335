"""Baseline: the fake echo engine served by LitServe (``litserve==0.2.19``), as its docs would have it.

Two LitAPIs on one server: ``POST /v1/infer`` answers JSON, ``POST /v1/infer/stream`` streams the
same SSE events as the platform. Async APIs (``enable_async``): the engine is an async generator.
Run: ``python -m bench.litserve_echo --port 8002``.
"""

from __future__ import annotations

import argparse
from typing import Any, AsyncIterator

import litserve as ls
from litserve.specs.openai import ChatMessage

from bench.echo import chat_call, chat_engine, echo_answer, echo_chunks, echo_engine, echo_request
from common.sse import SSE_DONE, sse_event
from common.call import ModelCall

REQUEST_TIMEOUT_S = 600  # LitServe's default (30 s) would turn queueing under load into 504s


class EchoAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        self.engine = echo_engine()

    # `request` stays unannotated: only then does LitServe parse the body as JSON
    async def decode_request(self, request) -> ModelCall:  # type: ignore[no-untyped-def]
        return echo_request(request)

    async def predict(self, request: ModelCall) -> dict[str, Any]:
        return await echo_answer(self.engine, request)

    async def encode_response(self, output: dict[str, Any]) -> dict[str, Any]:
        return output


class EchoStreamAPI(EchoAPI):
    async def predict(self, request: ModelCall) -> AsyncIterator[dict[str, Any]]:  # type: ignore[override]
        async for chunk in echo_chunks(self.engine, request):
            yield chunk

    async def encode_response(self, chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[str]:  # type: ignore[override]
        async for chunk in chunks:
            yield sse_event(chunk).decode()
        yield SSE_DONE.decode()


class ChatAPI(ls.LitAPI):
    """The fake chat engine behind LitServe's own OpenAI spec (it frames chunks and answers itself),
    in the async form its spec's docs give."""

    def setup(self, device: str) -> None:
        self.engine = chat_engine()

    async def decode_request(self, request):  # type: ignore[no-untyped-def, override]
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        return {"model": "chat", "messages": messages, "max_tokens": request.max_tokens or 64}

    async def predict(self, body: dict[str, Any]) -> AsyncIterator[str]:  # type: ignore[override]
        async for chunk in self.engine.generate(chat_call(body)):
            if chunk.get("text"):
                yield chunk["text"]

    async def encode_response(self, output: AsyncIterator[str]) -> AsyncIterator[ChatMessage]:  # type: ignore[override]
        async for text in output:
            yield ChatMessage(role="assistant", content=text)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    apis = [
        EchoAPI(api_path="/v1/infer", enable_async=True),
        EchoStreamAPI(api_path="/v1/infer/stream", stream=True, enable_async=True),
        ChatAPI(spec=ls.OpenAISpec(), enable_async=True),
    ]
    server = ls.LitServer(apis, accelerator="cpu", workers_per_device=1, timeout=REQUEST_TIMEOUT_S)
    server.run(host="127.0.0.1", port=port, generate_client_file=False, log_level="warning", num_api_servers=1)


if __name__ == "__main__":
    main()
