"""Baseline: the fake echo engine behind a plain single-process FastAPI app (no Ray).

Run: ``python -m bench.plain_app --port 8001`` (``bench`` starts it for the overhead section).
"""

from __future__ import annotations

import argparse
import json
from typing import Any, AsyncIterator

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from bench.echo import chat_call, chat_engine, echo_answer, echo_chunks, echo_engine, echo_request
from common.chunks import ChunkMerger
from common.sse import SSE_DONE, sse_event
from serve.router.openai_adapter import ChatStreamEncoder, chat_completion

app = FastAPI()
engine = echo_engine()
chat = chat_engine()


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/v1/infer")
async def infer(request: Request) -> Any:
    req = echo_request(json.loads(await request.body()))
    if not req.stream:
        return JSONResponse(await echo_answer(engine, req))

    async def events() -> AsyncIterator[bytes]:
        async for chunk in echo_chunks(engine, req):
            yield sse_event(chunk)
        yield SSE_DONE

    return StreamingResponse(events(), media_type="text/event-stream")


@app.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Any:
    """The fake chat engine, rendered with the platform's own OpenAI encoders."""
    call = chat_call(json.loads(await request.body()))
    if not call.stream:
        merger = ChunkMerger()
        async for chunk in chat.generate(call):
            merger.add(chunk)
        return JSONResponse(chat_completion(merger.result(), call.model_id, call.request_id))
    encoder = ChatStreamEncoder(call.model_id, call.request_id, include_usage=False)

    async def events() -> AsyncIterator[bytes]:
        async for chunk in chat.generate(call):
            for payload in encoder.on_chunk(chunk):
                yield sse_event(payload)
        yield SSE_DONE

    return StreamingResponse(events(), media_type="text/event-stream")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    uvicorn.run(app, host="127.0.0.1", port=parser.parse_args().port, log_level="warning", access_log=False)
