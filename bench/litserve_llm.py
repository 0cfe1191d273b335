"""Baseline: SmolLM2 served by LitServe the way its docs batch-stream an LLM.

A ``LitAPI`` with ``max_batch_size=8`` and ``stream=True``: LitServe collects up to 8 requests
(waiting at most ``BATCH_TIMEOUT_S``), ``predict`` runs a static greedy batch with a KV cache
(``bench.hf_llm.greedy_batch``) and yields one token per sequence per step, sent as the same SSE
events as the platform. A request that arrives while a batch runs waits for the whole batch.
Run: ``python -m bench.litserve_llm --port 8003 --entry '<model entry as JSON>'``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Iterator

import litserve as ls

from bench.hf_llm import CausalLM, greedy_batch, load_causal_lm
from common.sse import SSE_DONE, sse_event
from servers.chat_prompt import usage

MAX_BATCH_SIZE = 8
BATCH_TIMEOUT_S = 0.05  # lets requests sent together share a batch; LitServe's examples use 0.01-0.1 s
REQUEST_TIMEOUT_S = 1800  # queued requests wait for whole batches; LitServe's 30 s default would 504 them

Request = tuple[list[int], int]  # prompt ids, max_tokens


class GreedyLLMAPI(ls.LitAPI):
    def __init__(self, entry: dict[str, Any]) -> None:
        super().__init__(max_batch_size=MAX_BATCH_SIZE, batch_timeout=BATCH_TIMEOUT_S, stream=True, api_path="/v1/infer")
        self.entry = entry
        self.lm: CausalLM | None = None

    def setup(self, device: str) -> None:
        self.lm = load_causal_lm(self.entry)

    # `request` stays unannotated: only then does LitServe parse the body as JSON
    def decode_request(self, request) -> Request:  # type: ignore[no-untyped-def]
        assert self.lm is not None
        return self.lm.prompt_ids(request["input"]), int((request.get("params") or {}).get("max_tokens", 64))

    def predict(self, inputs: list[Request]) -> Iterator[list[dict[str, Any] | None]]:
        assert self.lm is not None
        prompts, limits = [list(i[0]) for i in inputs], [i[1] for i in inputs]
        produced = [0] * len(inputs)
        for step in greedy_batch(self.lm, prompts, limits):
            chunks: list[dict[str, Any] | None] = []
            for i, item in enumerate(step):
                if item is None:
                    chunks.append(None)
                    continue
                token, finished = item
                produced[i] += 1
                chunk = {"model_id": self.lm.model_id, "text": self._text(token), "finish_reason": None}
                if finished:
                    chunk.update(finish_reason="stop", usage=usage(len(prompts[i]), produced[i]))
                chunks.append(chunk)
            yield chunks

    def _text(self, token: int) -> str:
        assert self.lm is not None
        return "" if token in self.lm.eos_ids else self.lm.tokenizer.decode([token], skip_special_tokens=True)

    def encode_response(self, steps: Iterator[list[dict[str, Any] | None]]) -> Iterator[list[str]]:
        for step in steps:
            yield [_sse(chunk) for chunk in step]


def _sse(chunk: dict[str, Any] | None) -> str:
    if chunk is None:
        return ""
    event = sse_event(chunk).decode()
    return event + SSE_DONE.decode() if chunk["finish_reason"] else event


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--entry", required=True, help="the model entry (llm_configs item) as JSON")
    args = parser.parse_args()
    server = ls.LitServer(GreedyLLMAPI(json.loads(args.entry)), accelerator="cpu", workers_per_device=1, timeout=REQUEST_TIMEOUT_S)
    server.run(host="127.0.0.1", port=args.port, generate_client_file=False, log_level="warning", num_api_servers=1)


if __name__ == "__main__":
    main()
