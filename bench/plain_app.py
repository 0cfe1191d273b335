"""Baseline: the same fake echo engine behind a plain single-process FastAPI app (no Ray)."""

from __future__ import annotations

import json
import sys
from typing import Any, AsyncIterator

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from common.sse import SSE_DONE, sse_event
from configs.server_models import MultiModelConfig
from servers.base_engine import EngineRequest
from tests.fake_engines import FakeEchoEngine, FakeEchoKwargs, FakeEchoParams

app = FastAPI()
engine = FakeEchoEngine(
    MultiModelConfig.model_validate({"model_loading_config": {"model_id": "echo", "model_source": "none", "type": "FAKE_ECHO"}}),
    FakeEchoKwargs(),
)


@app.post("/v1/infer")
async def infer(request: Request) -> Any:
    body = json.loads(await request.body())
    req = EngineRequest("r", body["model_id"], body["input"], FakeEchoParams(**body.get("params", {})), body.get("stream", False))
    if req.stream:
        async def events() -> AsyncIterator[bytes]:
            async for chunk in engine.infer(req):
                yield sse_event({"model_id": req.model_id, **chunk})
            yield SSE_DONE

        return StreamingResponse(events(), media_type="text/event-stream")
    text = "".join([c["text"] async for c in engine.infer(req)])
    return JSONResponse({"text": text, "model_id": req.model_id, "finish_reason": "stop"})


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
