import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gadx.eval.suites import BUILTIN_FILES, builtin_path, load_suite

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "eval"  # ../shared beside the checkout


@pytest.mark.parametrize("name,rows,first", [
    ("vicuna", 80, "How can I improve my time management skills?"),
    ("mtbench", 80, "Compose an engaging travel blog post about a recent trip to Hawaii, highlighting "
                    "cultural experiences and must-see attractions."),
    ("selfinst", 252, "The sentence you are given might be too wordy, complicated, or unclear. Rewrite the "
                      "sentence and make your writing clearer by keeping it concise. Whenever possible, break "
                      "complex sentences into multiple sentences and eliminate unnecessary words.\n\nIf you have "
                      "any questions about my rate or if you find it necessary to increase or decrease the scope "
                      "for this project, please let me know."),
])
def test_builtin_suites(name, rows, first):
    suite = load_suite(name)
    assert suite.name == name and len(suite) == rows
    assert suite.prompts[0].messages == [{"role": "user", "content": first}]
    assert len({p.id for p in suite.prompts}) == rows
    assert all(p.question.strip() for p in suite.prompts)


def test_selfinst_without_input_is_instruction_only():
    raw = [json.loads(ln) for ln in builtin_path("selfinst").read_text().splitlines()]
    i = next(k for k, r in enumerate(raw) if not r["instances"][0]["input"].strip())
    assert load_suite("selfinst").prompts[i].question == raw[i]["instruction"]


def test_mtbench_uses_first_turn_only():
    raw = [json.loads(ln) for ln in builtin_path("mtbench").read_text().splitlines()]
    suite = load_suite("mtbench")
    assert [p.question for p in suite.prompts] == [r["turns"][0] for r in raw]


def test_shipped_files_match_shared_copies_and_keep_licences():
    folder = builtin_path("vicuna").parent
    for lic in ("LICENSE.fastchat", "LICENSE.self-instruct", "README.md"):
        assert (folder / lic).is_file()
    if not SHARED.is_dir():
        pytest.skip("shared data folder absent")
    for fname in BUILTIN_FILES.values():
        assert (folder / fname).read_bytes() == (SHARED / fname).read_bytes()


def test_limit():
    assert len(load_suite("selfinst", limit=5)) == 5
    with pytest.raises(ValueError, match="limit"):
        load_suite("vicuna", limit=0)


def test_jsonl_columns(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in [
        {"prompt": "one"},
        {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "two"}]},
        {"turns": ["three", "ignored"]},
        {"instruction": "four", "teacher_response": "4"},
    ]) + "\n\n")
    suite = load_suite(f"mine={p}")
    assert suite.name == "mine"
    assert [m.messages[-1]["content"] for m in suite.prompts] == ["one", "two", "three", "four"]
    assert suite.prompts[1].question == "System: be brief\n\nUser: two"
    assert suite.prompts[3].teacher_response == "4"
    assert load_suite(str(p)).name == "p"


def test_lmsys_parquet(tmp_path):
    p = tmp_path / "test.parquet"
    pq.write_table(pa.Table.from_pylist([
        {"content": [{"role": "user", "content": "What is 2+2?"}], "teacher_response": "4."},
        {"content": [{"role": "user", "content": "Hi"}], "teacher_response": "Hello!"},
    ]), p)
    suite = load_suite(f"lmsys={p}")
    assert suite.name == "lmsys" and len(suite) == 2
    assert suite.prompts[0].messages == [{"role": "user", "content": "What is 2+2?"}]
    assert [x.teacher_response for x in suite.prompts] == ["4.", "Hello!"]


@pytest.mark.parametrize("body,match", [
    ('{"prompt": "ok"}\n{not json}\n', r"bad\.jsonl: line 2: invalid JSON"),
    ('{"prompt": "ok"}\n{"text": "x"}\n', r"bad\.jsonl: row 1: no prompt column"),
    ('{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n',
     r"bad\.jsonl: row 0: the last message must be from the user"),
    ('{"messages": [{"role": "robot", "content": "q"}]}\n', r"row 0: bad message"),
    ('{"prompt": ""}\n', r"row 0: empty"),
    ('[1, 2]\n', r"line 1: expected a JSON object"),
    ('\n', r"no rows"),
])
def test_bad_files_name_file_and_row(tmp_path, body, match):
    p = tmp_path / "bad.jsonl"
    p.write_text(body)
    with pytest.raises(ValueError, match=match):
        load_suite(str(p))


def test_bad_specs(tmp_path):
    with pytest.raises(ValueError, match="lmsys=PATH"):
        load_suite("lmsys")
    with pytest.raises(ValueError, match="no such file"):
        load_suite("nope.jsonl")
    (tmp_path / "x.csv").write_text("a\n")
    with pytest.raises(ValueError, match="unsupported"):
        load_suite(str(tmp_path / "x.csv"))
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    with pytest.raises(ValueError, match="broken.parquet"):
        load_suite(str(tmp_path / "broken.parquet"))
