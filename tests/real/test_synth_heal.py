"""Heal data from the teacher itself and the KD heal (issue 20): the filters and losses by hand, the tools on
tiny random models.

    pytest tests/real/test_synth_heal.py      # seconds; no SmolLM2 weights
"""
import json
import math
import sys
from pathlib import Path

import pytest
import torch

from gadx.real.kd import cosine_lr, kd_loss
from gadx.real.synth_prompts import filter_prompts, near_duplicate, normalise, user_turn_prefix
from gadx.real.text_metrics import distinct_n

TOOLS = Path(__file__).resolve().parents[2] / "tools"


class _CharTok:
    """One token per character (ord); token 0 is special; a rendered prompt is the text plus 4 tokens."""

    special_ids = {"<s>": 0}

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i) for i in ids if not (skip_special_tokens and i == 0))

    def encode_chat(self, messages, add_generation_prompt=True):
        return [1, 1] + [ord(c) for c in messages[-1]["content"]] + [1, 1]


def _ids(text):
    return [ord(c) for c in text]


def test_normalise_and_near_duplicate():
    assert normalise("  Hello, World!! 3x ") == "hello world 3x"
    assert near_duplicate("What is the capital of France?", "what is the CAPITAL of france")
    assert near_duplicate("Write a poem", "Please write a poem about cats")  # containment
    # word 3-grams: {a b c, b c d, c d e} vs {a b c, b c d, c d x}: Jaccard 2/4
    assert near_duplicate("a b c d e", "a b c d x", jaccard=0.5)
    assert not near_duplicate("a b c d e", "a b c d x", jaccard=0.6)
    assert not near_duplicate("Tell me a joke about dogs", "Summarise this article on tax law")


def test_filter_prompts_drops_each_bad_kind_once_and_keeps_order():
    tok = _CharTok()
    samples = [
        (_ids("Plan a trip to Rome for me"), True),             # kept
        (_ids("Plan a trip to Rome for me"), False),            # unfinished (never reaches the duplicate check)
        (_ids("plan a TRIP to rome, for me!"), True),           # duplicate once normalised
        (_ids("Hi there") + [0] + _ids(" you"), True),          # holds a special token
        (_ids("Hi you"), True),                                 # 2 words < 3
        (_ids("word " * 30), True),                             # 150 + 4 tokens > 64
        (_ids("What is the capital of France today?"), True),   # contains an evaluation prompt
        (_ids("How do I bake sourdough bread at home?"), True),  # kept
    ]
    kept, counts = filter_prompts(samples, tokenizer=tok, avoid=["What is the capital of France"], max_prompt_len=64)
    assert kept == ["Plan a trip to Rome for me", "How do I bake sourdough bread at home?"]
    assert counts == {"sampled": 8, "kept": 2, "unfinished": 1, "special_token": 1, "too_short": 1, "too_long": 1,
                      "duplicate": 1, "near_eval": 1}
    with pytest.raises(ValueError, match="near_jaccard=0"):
        filter_prompts(samples, tokenizer=tok, near_jaccard=0)


def test_user_turn_prefix_cuts_the_template_where_the_users_words_begin(world_tok):
    from gadx.tokenizer import load_tokenizer

    tok = load_tokenizer(world_tok)
    prefix = user_turn_prefix(tok)
    whole = tok.encode_chat([{"role": "user", "content": "hello"}], add_generation_prompt=False)
    assert whole[: len(prefix)] == prefix and len(prefix) < len(whole)
    assert tok.decode(prefix, skip_special_tokens=False).rstrip().endswith("<|end_header_id|>")  # llama3 template


def test_kd_loss_is_the_forward_kl_and_cosine_lr_by_hand():
    t = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    loss, st = kd_loss(t.clone(), t)
    assert loss.item() == pytest.approx(0.0, abs=1e-6) and "ce" not in st
    s = torch.tensor([[0.0, 1.0, 0.0], [1.0, -1.0, 2.0]], requires_grad=True)
    pt, ps = torch.softmax(t, -1), torch.softmax(s.detach(), -1)
    want = (pt * (pt.log() - ps.log())).sum(-1).mean()
    tgt = torch.tensor([0, 2])
    loss, st = kd_loss(s, t, tgt, ce_weight=0.5)
    ce = -(ps[0, 0].log() + ps[1, 2].log()) / 2
    assert st["kl"] == pytest.approx(want.item(), rel=1e-5) and st["ce"] == pytest.approx(ce.item(), rel=1e-5)
    assert loss.item() == pytest.approx(want.item() + 0.5 * ce.item(), rel=1e-5)
    loss.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="needs target_N"):
        kd_loss(s, t, ce_weight=1.0)
    with pytest.raises(ValueError, match=r"\[N, V\]"):
        kd_loss(s[:1], t)
    assert cosine_lr(0, steps=10, peak=1.0, warmup=2) == pytest.approx(0.5)
    assert cosine_lr(1, steps=10, peak=1.0, warmup=2) == pytest.approx(1.0)
    assert cosine_lr(2, steps=10, peak=1.0, warmup=2) == pytest.approx(1.0)
    assert cosine_lr(9, steps=10, peak=1.0, warmup=2, floor=0.1) == pytest.approx(0.1)
    assert cosine_lr(5, steps=11, peak=1.0, floor=0.0) == pytest.approx(0.5)


def test_distinct_n_by_hand():
    assert distinct_n([[5, 6, 5, 6, 5]], 2) == pytest.approx(0.5)  # bigrams 56 65 56 65: 2 of 4
    assert distinct_n([[1, 2, 3], [4], [7, 7, 7]], 2) == pytest.approx((1.0 + 0.5) / 2)  # [4] has no bigram
    assert math.isnan(distinct_n([[1]], 2))


class _ScriptedEngine:
    """A stand-in KV-cache sampler: user turns from a script for the user-turn prefix, else a fixed reply."""

    def __init__(self, prefix, turns, reply, eos):
        self.prefix, self.turns, self.reply, self.eos = prefix, list(turns), reply, eos
        self.calls = []

    def load_weights(self, sd):
        pass

    def generate(self, prompts, *, max_new_tokens, temperature, eos_ids, seed):
        from gadx.sampler.engine import Rollout

        self.calls.append((len(prompts), max_new_tokens, temperature, seed))
        if all(list(p) == self.prefix for p in prompts):
            out = [self.turns.pop(0) for _ in prompts]
        else:
            out = [(self.reply + [self.eos], True) for _ in prompts]
        return Rollout([r for r, _ in out], [torch.zeros(len(r)) for r, _ in out], [f for _, f in out],
                       torch.tensor([len(r) for r, _ in out]))


def test_real_synth_tool_writes_filtered_prompts_and_replies(tmp_path, world_tok, monkeypatch):
    from tiny_models import save_student

    import gadx.sampler
    from gadx.tokenizer import load_tokenizer

    tok = load_tokenizer(world_tok)
    teacher = save_student(tmp_path / "teacher", tok, seed=2)
    prefix, eos = user_turn_prefix(tok), tok.eos_id
    enc = lambda s: tok.encode(s, add_special_tokens=False)  # noqa: E731
    turns = [(enc("tell me about the red box") + [eos], True), (enc("tell me about the red box") + [eos], True),
             (enc("where is the key") + [eos], True), (enc("a long unfinished turn"), False),
             (enc("put the ball on the table") + [eos], True)]
    eng = _ScriptedEngine(prefix, turns, enc("the box is red"), eos)
    monkeypatch.setattr(gadx.sampler, "KVCacheSampler", lambda *a, **k: eng)
    sys.path.insert(0, str(TOOLS))
    import real_synth

    out = tmp_path / "synth.jsonl"
    argv = ["--teacher", str(teacher), "--out", str(out), "--n", "5", "--batch", "2", "--no-eval-filter",
            "--reply-cap", "16"]
    assert real_synth.main(argv) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["messages"][0]["content"] for r in rows] == ["tell me about the red box", "where is the key",
                                                           "put the ball on the table"]
    assert all(r["finished"] and r["reply_ids"][-1] == eos and r["reply"] == "the box is red" for r in rows)
    summary = json.loads((tmp_path / "synth.jsonl.json").read_text())
    assert summary["counts"]["duplicate"] == 1 and summary["counts"]["unfinished"] == 1
    assert [c[0] for c in eng.calls] == [2, 2, 1, 2, 1]  # 5 turns, then 3 replies, in batches of 2
    assert real_synth.main(argv) == 0 and len(eng.calls) == 5  # the file exists: skipped
    # --force redoes the replies from the saved prompts (OUT.prompts.json): no user turn is sampled again
    assert real_synth.main(argv + ["--force"]) == 0
    assert [c[0] for c in eng.calls[5:]] == [2, 1] and len(out.read_text().splitlines()) == 3
    assert real_synth.main(argv + ["--force", "--max-prompts", "2"]) == 0  # replies to the first 2 only
    assert [c[0] for c in eng.calls[7:]] == [2] and len(out.read_text().splitlines()) == 2


@pytest.mark.timeout(300)
def test_kd_heal_tool_moves_a_tiny_student_toward_its_teacher(tmp_path, world_tok):
    """real_kd_heal.py on tiny random models: the held-out KL to the teacher falls, the saved folder loads."""
    from tiny_models import save_student

    from gadx.tokenizer import load_tokenizer

    tok = load_tokenizer(world_tok)
    student = save_student(tmp_path / "student", tok, seed=1)
    teacher = save_student(tmp_path / "teacher", tok, seed=2)
    data = tmp_path / "synth.jsonl"
    words = ["red box", "blue ball", "the key", "a table", "green door", "the lamp"]
    with data.open("w") as f:
        for i in range(24):
            reply = tok.encode(f"the {words[i % 6]} is near {words[(i + 1) % 6]}", add_special_tokens=False) + [tok.eos_id]
            f.write(json.dumps({"id": f"synth-{i}", "messages": [{"role": "user", "content": f"where is {words[i % 6]}"}],
                                "reply_ids": reply, "finished": True}) + "\n")
    sys.path.insert(0, str(TOOLS))
    import real_kd_heal

    out = tmp_path / "kd"
    argv = ["--student", str(student), "--teacher", str(teacher), "--data", str(data), "--out", str(out),
            "--steps", "12", "--batch", "4", "--micro", "2", "--lr", "1e-2", "--warmup", "2", "--held", "4",
            "--eval-every", "6", "--save-every", "6", "--max-prompt-len", "64", "--max-response-len", "24"]
    assert real_kd_heal.main(argv) == 0
    m = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    held = [r["held_kl"] for r in m if "held_kl" in r]
    assert len(held) == 3 and held[-1] < 0.7 * held[0], held
    from real_d_check import load_folder

    mc, sd, _ = load_folder(out / "student_hf")
    _, sd0, _ = load_folder(student)
    assert set(sd) == set(sd0) and not torch.equal(sd["model.norm.weight"], sd0["model.norm.weight"])
    with pytest.raises(ValueError, match="--held 40"):
        real_kd_heal.main(argv[:7] + [str(tmp_path / "kd2")] + argv[8:] + ["--held", "40"])
