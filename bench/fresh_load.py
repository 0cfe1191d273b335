"""``python -m bench.fresh_load '<entry json>'``: load one model in a fresh process, as a restart would,
and print when its first token came (for the ``swap`` section's baseline).

The engine is the platform's own (same loading code, same first request), so the only difference with a
swap-in is the process: a new interpreter imports torch and transformers before it can load anything.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time


async def first_token(entry: dict) -> dict[str, float]:
    began_import = time.time()
    from common.call import ModelCall
    from common.endpoints import CHAT_COMPLETIONS
    from configs.server_models import MultiModelConfig
    from servers.registry import get_engine_class

    config = MultiModelConfig.model_validate(entry)
    engine_cls = get_engine_class(config.engine_type)
    engine_cls.import_libraries()
    began_load = time.time()
    engine = engine_cls(config, engine_cls.config_model.model_validate(config.engine_kwargs))
    await engine.start()
    params = engine_cls.params_model.model_validate({"max_tokens": 4, "temperature": 0})
    call = ModelCall("fresh", config.model_id, CHAT_COMPLETIONS, [{"role": "user", "content": "Hi"}], params, stream=True)
    async for chunk in engine.generate(call):
        if chunk.get("text"):
            break
    first = time.time()
    await engine.stop()
    return {"import_started": began_import, "load_started": began_load, "first_token": first}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(first_token(json.loads(sys.argv[1])))))
