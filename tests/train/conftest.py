"""Fixtures for trainer tests: a tiny embedded config and the world's sentencepiece tokenizer.

The tokenizer is trained once per session (gadx.tokenizer on the world's text,
llama3 chat template, as the embedded default does) and passed as model.tokenizer.
"""
import pytest

TOK_VOCAB = 400


@pytest.fixture(scope="session")
def world_tok(tmp_path_factory):
    from gadx.tokenizer import train_sentencepiece
    from gadx.world import World

    folder = tmp_path_factory.mktemp("world_tok")
    train_sentencepiece(World(seed=0).corpus(), folder, TOK_VOCAB, chat_template="llama3")
    return str(folder)


from tiny_config import TINY, tiny_argv  # noqa: E402,F401 - re-exported for fixtures


@pytest.fixture
def tiny_args(world_tok):
    return lambda out, *extra: tiny_argv(out, world_tok, *extra)
