"""Replies that end (issue 20, item 1): only prompts whose teacher reply stops, EOS included, within the cap."""
import json

import pytest

from gadx.real.data import keep_ended_prompts, reply_ends, write_prompt_files


class _CharTok:
    """One token per character (no special tokens)."""

    def encode(self, text, add_special_tokens=False):
        return list(text)

    def encode_chat(self, messages, add_generation_prompt=True):
        return list(messages[-1]["content"])


def test_reply_ends_needs_a_stop_and_room_for_the_eos():
    tok = _CharTok()
    assert reply_ends(tok, "abc", "stop", 4)          # 3 tokens + EOS = 4
    assert not reply_ends(tok, "abcd", "stop", 4)     # 4 + EOS: the trainer would cut the EOS
    assert not reply_ends(tok, "ab", "length", 4)     # the teacher hit its cap: no end-of-reply cue
    assert not reply_ends(tok, "ab", None, 4)


def test_keep_ended_prompts_filters_every_set_once(tmp_path):
    write_prompt_files(tmp_path, n_train=200, seed=0)
    full = {n: [json.loads(x) for x in (tmp_path / f"{n}.jsonl").read_text().splitlines()]
            for n in ("train", "heldout_id", "ood_vicuna", "ood_mtbench")}
    asked = []

    def fake_teacher(messages_list):  # a reply of len(prompt) % 50 characters; "stop" unless the prompt has a "?"
        asked.append(len(messages_list))
        return [(m[-1]["content"][: len(m[-1]["content"]) % 50], "length" if "?" in m[-1]["content"] else "stop") for m in messages_list]

    def kept_by_hand(rows, cap):
        return [r["id"] for r in rows if "?" not in r["messages"][-1]["content"]
                and len(r["messages"][-1]["content"]) % 50 + 1 <= cap]

    s = keep_ended_prompts(tmp_path, fake_teacher, tokenizer=_CharTok(), max_reply_tokens=40)
    for name, rows in full.items():
        now = [json.loads(x)["id"] for x in (tmp_path / f"{name}.jsonl").read_text().splitlines()]
        assert now == kept_by_hand(rows, 40) and s[name]["kept"] == len(now) and s[name]["total"] == len(rows)
        assert 0 < len(now) < len(rows), name  # the fake drops some and keeps some of every set
        assert sorted(now + s[name]["dropped"]) == sorted(r["id"] for r in rows)
    # a second call with another cap filters from the saved full files, not from the filtered ones
    s2 = keep_ended_prompts(tmp_path, fake_teacher, tokenizer=_CharTok(), max_reply_tokens=61)
    for name, rows in full.items():
        assert s2[name]["total"] == len(rows)
        assert [json.loads(x)["id"] for x in (tmp_path / f"{name}.jsonl").read_text().splitlines()] == kept_by_hand(rows, 61)
    assert json.loads((tmp_path / "ended.json").read_text())["max_reply_tokens"] == 61
    assert asked == [len(full[n]) for n in full] * 2


def test_keep_ended_prompts_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="max_reply_tokens=1"):
        keep_ended_prompts(tmp_path, lambda m: [], tokenizer=_CharTok(), max_reply_tokens=1)
    with pytest.raises(ValueError, match="write the prompt files first"):
        keep_ended_prompts(tmp_path, lambda m: [], tokenizer=_CharTok(), max_reply_tokens=8)
    write_prompt_files(tmp_path)
    with pytest.raises(ValueError, match="returned 0 replies"):
        keep_ended_prompts(tmp_path, lambda m: [], tokenizer=_CharTok(), max_reply_tokens=8)
