"""LoRA adapters on LLAMA_CPP, in-process on the real demo GGUF: PEFT adapters converted to GGUF by
scripts/peft_lora_to_gguf.py, chosen per request, requests on different adapters and the base served
together; the converted adapter answers as TRANSFORMERS does with the PEFT adapter; bad adapters fail
the start naming the entry and the file."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from common.call import ModelCall
from common.endpoints import CHAT_COMPLETIONS
from common.errors import InvalidRequestError, NotFoundError
from configs.server_models import MultiModelConfig
from configs.structured_models import ConstrainedLLMParams
from servers.chat_prompt import encode_prompt
from servers.llama.gguf_model import GgufLoadError
from servers.llama_cpp_engine import LlamaCppEngine
from tests.conftest import SMOLLM2_GGUF

pytest.importorskip("llama_cpp")

PARIS = [{"role": "user", "content": "Name the capital of France."}]
HAIKU = [{"role": "user", "content": "Write a haiku about rain."}]
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# small random deltas: they change SmolLM2's answers yet leave it fluent, so Q4 (llama.cpp) and float32
# (TRANSFORMERS) agree on the first tokens rather than on noise
SCALE = 0.06


def make_engine(cls: type, kind: str, source: Path, adapters: dict[str, Path], **kwargs: Any) -> Any:
    cfg = MultiModelConfig.model_validate(
        {"model_loading_config": {"model_id": "m", "model_source": str(source), "type": kind},
         "lora_adapters": [{"adapter_id": a, "source": str(p)} for a, p in adapters.items()],
         "engine_kwargs": {"gguf_file": SMOLLM2_GGUF, **kwargs}})
    return cls(cfg, cls.config_model.model_validate(cfg.engine_kwargs))


def llama_engine(source: Path, adapters: dict[str, Path]) -> LlamaCppEngine:
    return make_engine(LlamaCppEngine, "LLAMA_CPP", source, adapters, n_ctx=512, n_parallel=4, num_threads=1)


@pytest.fixture(scope="module")
def peft_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tests.tiny_models import SMOLLM2_SHAPES, build_lora

    folder = tmp_path_factory.mktemp("peft")
    return {name: build_lora(folder / name, SMOLLM2_SHAPES, seed, scale=SCALE, modules=ALL_LINEAR)
            for name, seed in (("one", 1), ("two", 2))}


@pytest.fixture(scope="module")
def gguf_loras(peft_dirs: dict[str, Path], smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The PEFT adapters in GGUF form: "one" as a file, "two" as a folder holding its one .gguf file."""
    from scripts.peft_lora_to_gguf import convert

    folder = tmp_path_factory.mktemp("gguf-loras")
    one = convert(peft_dirs["one"], smollm2_dir / SMOLLM2_GGUF, folder / "one.gguf")
    two = convert(peft_dirs["two"], smollm2_dir / SMOLLM2_GGUF, folder / "two" / "adapter.gguf")
    return {"one": one, "two": two.parent}


@pytest.fixture(scope="module")
def engine(smollm2_dir: Path, gguf_loras: dict[str, Path]) -> Any:
    loop = asyncio.new_event_loop()
    eng = llama_engine(smollm2_dir, gguf_loras)
    loop.run_until_complete(eng.start())
    yield eng, loop
    loop.run_until_complete(eng.stop())
    loop.close()


async def answer(eng: Any, adapter: str | None, messages: Any = PARIS, max_tokens: int = 12) -> str:
    call = ModelCall("r", "m", CHAT_COMPLETIONS, messages, ConstrainedLLMParams(temperature=0, max_tokens=max_tokens),
                     adapter=adapter)
    return "".join([chunk["text"] async for chunk in eng.generate(call)])


def run(engine: Any, *coros: Any) -> list[Any]:
    _, loop = engine

    async def together() -> list[Any]:
        return await asyncio.gather(*coros)

    return loop.run_until_complete(together())


def test_an_adapter_changes_the_answer(engine: Any) -> None:
    eng = engine[0]
    base, one, two = run(engine, *(answer(eng, a, HAIKU) for a in (None, "one", "two")))
    assert base and one and two
    assert len({base, one, two}) == 3, (base, one, two)
    assert eng.stats()["adapters_loaded"] == ["one", "two"]


def test_base_and_adapters_together_answer_as_alone(engine: Any) -> None:
    """Requests on two adapters and the base share one step: one decode per adapter, each answer the one it
    gets alone (greedy); requests all on one adapter switch nothing."""
    eng = engine[0]
    asks = [(None, PARIS), ("one", PARIS), ("two", HAIKU), ("one", HAIKU), (None, HAIKU)]
    alone = [run(engine, answer(eng, a, m))[0] for a, m in asks]
    together = run(engine, *(answer(eng, a, m) for a, m in asks))
    assert together == alone
    before = eng.stats()["adapter_switches"]
    run(engine, answer(eng, "two", PARIS), answer(eng, "two", HAIKU))  # at most the one switch to "two"
    run(engine, answer(eng, "two", PARIS, max_tokens=4))
    assert eng.stats()["adapter_switches"] - before <= 1


def test_a_cached_prefix_is_reused_only_on_its_adapter(engine: Any) -> None:
    """A slot's cache was computed through its adapter: the same prompt on another adapter reads it again (only the
    chat template's opening, which slots of earlier tests on that adapter hold, is reused), and on the same adapter
    the whole prompt but its last token is reused.

    Counted, not compared by answers: with an adapter, a prompt read whole and a reused prefix plus one token differ
    in the last digits of the logits (llama.cpp multiplies the adapter's float32 matrices with other kernels for one
    token than for many), and "one" has a near tie on PARIS (0.001 of a logit on one CPU), so its greedy answer
    may differ between the two ways; without adapters both ways give the same logits (test_llama_cpp_engine)."""
    eng = engine[0]
    italy = [{"role": "user", "content": "Name the capital of Italy."}]  # a prompt no other test sends
    n = len(encode_prompt(eng.tokenizer, italy, model_id="m", use_chat_template=True, raw_prompt=False))

    def reused_by(adapter: str) -> int:
        before = eng.stats()["reused_prompt_tokens"]
        run(engine, answer(eng, adapter, italy, max_tokens=2))
        return eng.stats()["reused_prompt_tokens"] - before

    reused_by("one")
    assert reused_by("two") < n - 1  # "one"'s cache of this prompt is of no use to "two"
    assert reused_by("two") == n - 1


def test_unknown_adapter_is_a_404_and_a_model_without_adapters_a_400(engine: Any, smollm2_dir: Path) -> None:
    with pytest.raises(NotFoundError) as err:
        run(engine, answer(engine[0], "nope"))
    assert err.value.status_code == 404 and "one, two" in str(err.value)
    with pytest.raises(InvalidRequestError):
        llama_engine(smollm2_dir, {}).load_adapter("one")


def test_bad_adapters_fail_the_start_naming_entry_and_file(tmp_path: Path, smollm2_dir: Path,
                                                           peft_dirs: dict[str, Path]) -> None:
    import gguf
    import numpy as np

    def adapter_file(name: str, arch: str, tensors: dict[str, tuple[int, int]]) -> Path:
        writer = gguf.GGUFWriter(str(tmp_path / name), arch=arch)
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, 8.0)
        for tensor, shape in tensors.items():
            writer.add_tensor(tensor, np.zeros(shape, dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        return tmp_path / name

    notes = tmp_path / "notes.gguf"
    notes.write_text("not an adapter")
    q = {"blk.0.attn_q.weight.lora_a": (4, 576), "blk.0.attn_q.weight.lora_b": (576, 4)}
    cases = [
        (notes, "not a GGUF file"),
        (adapter_file("qwen.gguf", "qwen2", q), "arch mismatch"),
        (adapter_file("wide.gguf", "llama", {"blk.0.attn_q.weight.lora_a": (4, 1024),
                                             "blk.0.attn_q.weight.lora_b": (1024, 4)}), "incorrect shape"),
        (adapter_file("extra.gguf", "llama", {"blk.99.attn_q.weight.lora_a": (4, 576),
                                              "blk.99.attn_q.weight.lora_b": (576, 4)}), "does not exist in base model"),
        (peft_dirs["one"], "scripts/peft_lora_to_gguf.py"),
        (tmp_path / "missing.gguf", "no such file"),
    ]
    for path, words in cases:
        eng = llama_engine(smollm2_dir, {"bad": path})
        with pytest.raises(GgufLoadError) as err:
            asyncio.run(eng.start())
        message = str(err.value)
        assert "lora_adapters 'bad'" in message and path.name in message and words in message, message
        assert eng.model is None  # the base model was freed


def test_converted_adapter_answers_as_transformers_with_the_peft_adapter(
        engine: Any, smollm2_dir: Path, peft_dirs: dict[str, Path], gguf_loras: dict[str, Path]) -> None:
    """The same adapters on both engines: TRANSFORMERS (float32, the PEFT folders through the repo's peft path) and
    llama.cpp (Q4_1, the converted GGUFs). What each adapter changes in the first token's logits agrees (a wrong
    q/k row permutation or scale in the converter does not: its correlation drops to 0.89-0.97); the greedy first token
    agrees wherever float32 leads by > 0.3 (a near tie may flip under Q4)."""
    import numpy as np

    from servers.transformers_engine import TransformersEngine

    hf = make_engine(TransformersEngine, "TRANSFORMERS", smollm2_dir, peft_dirs, dtype="float32", max_batch_size=4)
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(hf.start())
        theirs = [loop.run_until_complete(answer(hf, a, PARIS, max_tokens=4)) for a in (None, "one")]
        ours = [run(engine, answer(engine[0], a, PARIS, max_tokens=4))[0] for a in (None, "one")]
        # the base answers agree and the adapter changes both; the adapter's own greedy tokens are compared through
        # logits below (its first token leads by only 0.2 here, which another CPU's kernels may flip)
        assert ours[0] == theirs[0] and ours[1] != ours[0] and theirs[1] != theirs[0], (ours, theirs)
        peft_model = hf._batcher.model  # wrapped by peft with both adapters by the requests above
        loop.run_until_complete(answer(hf, "two", PARIS, max_tokens=1))
        compare_first_token_logits(smollm2_dir, peft_model, gguf_loras, np)
    finally:
        loop.run_until_complete(hf.stop())
        loop.close()


def compare_first_token_logits(smollm2_dir: Path, peft_model: Any, gguf_loras: dict[str, Path], np: Any) -> None:
    import torch

    from servers.chat_prompt import encode_prompt
    from servers.llama.gguf_model import GgufModel, GgufTokenizer
    from servers.llama.lora import LoraSwitch, load_loras

    model = GgufModel(smollm2_dir / SMOLLM2_GGUF, n_ctx=256, n_parallel=1, n_batch=256, n_threads=1)
    try:
        switch = LoraSwitch(model, load_loras(model, {a: str(p) for a, p in gguf_loras.items()}))
        lib = model.llama.lib

        def llama_logits(ids: list[int], adapter: str | None) -> Any:
            switch.use(adapter)
            lib.llama_memory_seq_rm(model.memory, 0, 0, -1)
            tokens = (lib.llama_token * len(ids))(*ids)
            assert lib.llama_decode(model.ctx, lib.llama_batch_get_one(tokens, len(ids))) == 0
            return np.ctypeslib.as_array(lib.llama_get_logits_ith(model.ctx, -1), shape=(model.n_vocab,)).copy()

        def peft_logits(ids: list[int], adapter: str | None) -> Any:
            with torch.inference_mode():
                if adapter is None:
                    with peft_model.disable_adapter():
                        return peft_model(torch.tensor([ids])).logits[0, -1].float().numpy()
                peft_model.set_adapter(adapter)
                return peft_model(torch.tensor([ids])).logits[0, -1].float().numpy()

        agree, clear = 0, 0
        for question in ("Name the capital of France.", "Write a haiku about rain.", "Say hello.", "Name a fruit."):
            ids = encode_prompt(GgufTokenizer(model), [{"role": "user", "content": question}], model_id="m",
                                use_chat_template=True, raw_prompt=False)
            ours_base, theirs_base = llama_logits(ids, None), peft_logits(ids, None)
            for adapter in gguf_loras:
                ours, theirs = llama_logits(ids, adapter), peft_logits(ids, adapter)
                correlation = np.corrcoef(ours - ours_base, theirs - theirs_base)[0, 1]
                top2 = np.sort(theirs)[-2:]
                print(f"{question[:24]:24} {adapter}: llama.cpp {ours.argmax()} float32 {theirs.argmax()} "
                      f"(margin {top2[1] - top2[0]:.2f}), correlation of the adapter's change {correlation:.4f}")
                assert correlation > 0.99, (question, adapter, correlation)
                agree += int(ours.argmax() == theirs.argmax())
                if top2[1] - top2[0] > 0.3:
                    clear += 1
                    assert ours.argmax() == theirs.argmax(), (question, adapter)
        print(f"first token agrees in {agree} of {4 * len(gguf_loras)}; {clear} with a clear winner")
    finally:
        model.close()


def test_converter_permutes_q_and_k_rows_as_the_base_gguf_and_refuses_what_it_cannot_convert(
        tmp_path: Path, smollm2_dir: Path) -> None:
    import json

    import numpy as np

    from scripts.peft_lora_to_gguf import ConversionError, convert, permute_rows
    from tests.tiny_models import build_lora

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((4, 16)), rng.standard_normal((32, 4))  # 2 heads of 16 rows
    delta = b @ a
    heads = delta.reshape(2, 2, 8, 16).swapaxes(1, 2).reshape(32, 16)  # HF -> GGUF row order of a q weight
    np.testing.assert_allclose(permute_rows(b, 2) @ a, heads)
    other = build_lora(tmp_path / "wide", type("Cfg", (), {"hidden_size": 640, "num_attention_heads": 10,
                                                            "num_key_value_heads": 5, "num_hidden_layers": 2})(), seed=0)
    with pytest.raises(ConversionError, match="another model"):
        convert(other, smollm2_dir / SMOLLM2_GGUF, tmp_path / "wide.gguf")
    config = json.loads((other / "adapter_config.json").read_text())
    (other / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    with pytest.raises(ConversionError, match="DoRA"):
        convert(other, smollm2_dir / SMOLLM2_GGUF, tmp_path / "dora.gguf")
