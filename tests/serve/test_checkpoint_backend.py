"""`CheckpointBackend`: a tiny random HF checkpoint served through the KV-cache sampler."""
from __future__ import annotations

import pytest

transformers = pytest.importorskip("transformers")
openai = pytest.importorskip("openai")


from gadx.serve import CheckpointBackend, ServeConfig, start_in_thread  # noqa: E402
from tiny_models import hf_model  # noqa: E402

TEXTS = [f"the {a} {b} sat on the {c} mat number {n}." for n, (a, b, c) in enumerate(
    (a, b, c) for a in ("red", "green", "blue", "black") for b in ("cat", "dog", "fox") for c in ("big", "small"))
] * 10


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from gadx.tokenizer import train_sentencepiece

    folder = tmp_path_factory.mktemp("tiny_teacher")
    tok = train_sentencepiece(TEXTS, folder, 296)
    hf_model("qwen2", vocab_size=tok.vocab_size, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, initializer_range=0.3,
             bos_token_id=tok.bos_id, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id,
             tie_word_embeddings=False).save_pretrained(folder)
    return folder


def test_checkpoint_backend_greedy_is_deterministic_and_limits_length(ckpt):
    backend = CheckpointBackend(str(ckpt), max_batch=8)
    with start_in_thread(backend, config=ServeConfig(max_batch=8)) as h:
        client = openai.OpenAI(base_url=h.url, api_key="unused", max_retries=0)

        def ask(content, **kw):
            return client.chat.completions.create(model=backend.name, messages=[{"role": "user", "content": content}],
                                                  temperature=0.0, **kw)

        a, b = ask("the red cat", max_tokens=12), ask("the red cat", max_tokens=12)
        assert a.choices[0].message.content == b.choices[0].message.content
        assert a.usage.completion_tokens <= 12 and a.usage.prompt_tokens > 3
        assert a.choices[0].finish_reason in ("stop", "length")
        if a.choices[0].finish_reason == "length":
            assert a.usage.completion_tokens == 12
        short = ask("the red cat", max_tokens=3)
        assert short.usage.completion_tokens <= 3
        with pytest.raises(openai.BadRequestError, match="context length"):
            ask("the red cat " * 40, max_tokens=100)
