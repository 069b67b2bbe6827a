import csv
import json
from types import SimpleNamespace

import pytest

from gadx.eval import evaluate_small, main
from gadx.eval.generate import Answer
from gadx.eval.judge import ClientJudge
from gadx.eval.report import format_table, write_reports
from gadx.eval.runner import run_eval
from gadx.eval.suites import load_suite


def fixed(texts_by_question):
    def answer(prompts):
        return [Answer(texts_by_question(p.question), 3, True) for p in prompts]
    return answer


def test_run_eval_scores_models_and_overlaps(fake_client, prompt_file, tmp_path):
    suite = load_suite(str(prompt_file))
    models = [
        ("teacher", fixed(lambda q: f"teacher: {q}")),
        ("student", fixed(lambda q: "SCORE 5 10" if "colour" in q else f"teacher: {q}")),
    ]
    res = run_eval(models, [suite], judge=ClientJudge(fake_client), out_dir=tmp_path, n_boot=100)
    t, s = res["results"]["teacher"]["mini"], res["results"]["student"]["mini"]
    # teacher's answers echo the question, so its markers reach the judge: SCORE 9 6 / default 7 8 /
    # MALFORMED-ONCE (default after retry) / MALFORMED-ALWAYS (unparseable)
    assert (t["n_judged"], t["n_unparseable"]) == (3, 1)
    assert t["score"] == pytest.approx(100 * (9 + 7 + 7) / (9 + 7 + 7 + 6 + 8 + 8))
    assert s["score"] == pytest.approx(100 * (5 + 7 + 7) / (5 + 7 + 7 + 10 + 8 + 8))
    assert "rougeL_f1" not in t  # no teacher replies to compare the teacher with
    # 3 of 4 answers equal the teacher's; "SCORE 5 10" shares only "score" with the 7-token teacher reply
    # (P = 1/3, R = 1/7, F1 = 1/5)
    assert s["rougeL_f1"] == pytest.approx(100 * (3 + 1 / 5) / 4)
    # references are asked once per suite, not per model
    assert fake_client.script.calls["answer"] == 4
    recs = [json.loads(ln) for ln in (tmp_path / "answers" / "student__mini.jsonl").read_text().splitlines()]
    assert recs[0]["student_score"] == 5.0 and recs[0]["reference"] == "judge-model says: Name a colour. SCORE 9 6"
    assert recs[3]["student_score"] is None and recs[3]["judge_attempts"] == 3


def test_reports_written(fake_client, prompt_file, tmp_path):
    suite = load_suite(str(prompt_file))
    res = run_eval([("a", fixed(lambda q: "SCORE 8 8")), ("b", fixed(lambda q: "SCORE 4 8"))],
                   [suite, load_suite("vicuna", limit=3)], judge=ClientJudge(fake_client), n_boot=50)
    paths = write_reports(res, tmp_path / "out")
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    back = json.loads(paths["json"].read_text())
    assert back["results"]["b"]["mini"]["score"] == pytest.approx(100 * 4 / 12)
    assert "ratio of sums" in back["aggregation"]
    rows = list(csv.DictReader(paths["csv"].open()))
    assert [(r["model"], r["suite"]) for r in rows] == [("a", "mini"), ("a", "vicuna"), ("b", "mini"), ("b", "vicuna")]
    assert float(rows[2]["score"]) == pytest.approx(100 * 4 / 12)
    table = format_table(res)
    lines = table.splitlines()
    assert lines[0].split() == ["judge", "score", "mini", "vicuna"]
    assert lines[2].startswith("a ") and "50.0 [50.0,50.0]" in lines[2]
    assert lines[3].startswith("b ") and "33.3 [33.3,33.3]" in lines[3]


def test_judge_free_report(prompt_file, tmp_path):
    res = run_eval([("a", fixed(lambda q: "x"))], [load_suite(str(prompt_file))], judge=None)
    assert res["results"]["a"]["mini"]["score"] is None
    paths = write_reports(res, tmp_path)
    assert paths["png"].is_file()
    assert format_table(res).splitlines()[0].split()[:3] == ["mean", "length", "(tokens)"]


def test_cli_rejects_bad_arguments(tmp_path, capsys):
    assert main(["--suite", "vicuna", "--out", str(tmp_path), "--no-judge"]) == 2
    assert "nothing to evaluate" in capsys.readouterr().err
    assert main(["--teacher-url", "http://x/v1", "--teacher-model", "t", "--suite", "vicuna", "--out", str(tmp_path)]) == 2
    assert "--judge-url" in capsys.readouterr().err
    assert main(["--teacher-url", "http://x/v1", "--teacher-model", "t", "--suite", "lmsys",
                 "--out", str(tmp_path), "--no-judge"]) == 2
    assert "lmsys=PATH" in capsys.readouterr().err
    assert main(["--model", str(tmp_path / "nope"), "--suite", "vicuna", "--out", str(tmp_path), "--no-judge"]) == 2
    assert "not a checkpoint folder" in capsys.readouterr().err


def test_cli_over_http_and_cache(fake_server, script, prompt_file, tmp_path, capsys):
    pytest.importorskip("gadx.teacher")
    argv = ["--teacher-url", fake_server.url, "--teacher-model", "tm", "--suite", str(prompt_file),
            "--suite", "vicuna", "--limit", "4", "--judge-url", fake_server.url, "--judge-model", "jm",
            "--out", str(tmp_path / "out"), "--bootstrap", "200"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    mini = res["results"]["teacher"]["mini"]
    assert (mini["n_judged"], mini["n_unparseable"]) == (3, 1)
    assert mini["score"] == pytest.approx(100 * 23 / 45)
    assert res["results"]["teacher"]["vicuna"]["score"] == pytest.approx(100 * 7 / 15)
    assert "teacher" in printed and "mini" in printed and "(1?)" in printed
    assert (tmp_path / "out" / "scores.png").is_file() and (tmp_path / "out" / "results.csv").is_file()
    first = dict(script.calls)
    # 8 teacher answers + 8 references; judge: 8 first tries + 2 retries + 1 more for MALFORMED-ALWAYS
    assert first == {"answer": 16, "judge": 11}
    assert res["api_stats"]["judge"]["sent"] == 19

    assert main(argv) == 0  # everything comes from the cache: no request reaches the server
    assert dict(script.calls) == first
    again = json.loads((tmp_path / "out" / "results.json").read_text())
    assert again["results"] == res["results"]
    assert again["api_stats"]["judge"]["sent"] == 0


class _Tok:
    """Characters as token ids; 0 is EOS."""

    def encode_chat(self, messages, add_generation_prompt=True):
        return [ord(c) for c in messages[-1]["content"]]

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i) for i in ids)

    def encode(self, text, add_special_tokens=False):
        return [ord(c) for c in text]


class _Engine:
    """Greedy 'model' that echoes the first max_new_tokens characters, then EOS when the prompt fits."""

    def __init__(self):
        self.calls = []

    def generate(self, prompts, *, max_new_tokens, temperature=1.0, top_p=1.0, top_k=0, eos_ids=(), seed=None):
        self.calls.append((len(prompts), max_new_tokens, temperature))
        out = [list(p[:max_new_tokens]) + ([0] if len(p) < max_new_tokens else []) for p in prompts]
        return SimpleNamespace(responses=out, finished=[len(p) < max_new_tokens for p in prompts])


def test_evaluate_small_is_judge_free_and_greedy(tmp_path):
    p = tmp_path / "s.jsonl"
    p.write_text(json.dumps({"prompt": "hello there", "teacher_response": "hello there"}) + "\n"
                 + json.dumps({"prompt": "a much longer prompt than the limit", "teacher_response": "zzz"}) + "\n")
    engine = _Engine()
    m = evaluate_small(engine, _Tok(), eos_ids=[0], suites=(f"tiny={p}",), limit=None, max_new_tokens=12,
                       batch_size=1)
    assert engine.calls == [(1, 12, 0.0), (1, 12, 0.0)]
    assert m["eval/tiny/mean_len_tokens"] == pytest.approx((11 + 12) / 2)  # EOS not counted
    assert m["eval/tiny/truncated_frac"] == pytest.approx(0.5)
    assert m["eval/tiny/rougeL_f1"] == pytest.approx(50.0)  # exact copy, then nothing shared with "zzz"
    assert not any("score" in k for k in m)


def test_evaluate_small_with_a_world():
    class Teacher:
        def is_correct(self, prompt, response):
            return prompt == response

        def logprob(self, prompt, response):
            return -1.0 * len(response)

    world = SimpleNamespace(teacher=Teacher(),
                            split=lambda name: [SimpleNamespace(prompt=s) for s in ("abc", "defghij", "k")])
    m = evaluate_small(_Engine(), _Tok(), eos_ids=[0], suites=(), world=world, limit=3, max_new_tokens=5)
    assert m["eval/world_test_id/task_accuracy"] == pytest.approx(2 / 3)  # "defghij" is cut at 5
    assert m["eval/world_test_id/teacher_logprob_per_token"] == pytest.approx(-1.0)
    assert m["eval/world_test_id/truncated_frac"] == pytest.approx(1 / 3)


def test_student_answers_on_the_kv_sampler():
    """Batched, length-sorted greedy decoding maps answers back to prompt order and equals one-by-one decoding."""
    torch = pytest.importorskip("torch")
    sampler_mod = pytest.importorskip("gadx.sampler")
    from gadx.eval.generate import Student, student_answers
    from gadx.eval.suites import EvalPrompt
    from gadx.models.config import ModelConfig
    from tiny_models import random_hf_state

    cfg = ModelConfig(family="llama", vocab_size=128, hidden_size=32, intermediate_size=64, num_layers=2,
                      num_heads=4, num_kv_heads=2, head_dim=8, max_position_embeddings=256, eos_token_id=0)
    state = random_hf_state(cfg, std=0.3)
    engine = sampler_mod.KVCacheSampler(cfg, max_batch=3, max_seq_len=40)
    engine.load_weights(state)
    student = Student(engine, _Tok(), [0])
    texts = ["a somewhat longer prompt", "hi", "medium prompt", "x" * 36, "yo"]
    prompts = [EvalPrompt(str(i), [{"role": "user", "content": t}]) for i, t in enumerate(texts)]
    batched = student_answers(student, prompts, max_new_tokens=8, batch_size=3)
    single = [student_answers(student, [p], max_new_tokens=8, batch_size=1)[0] for p in prompts]
    assert [a.text for a in batched] == [a.text for a in single]
    assert batched[3].n_tokens <= 4  # 36 prompt tokens leave 4 of the sampler's 40 positions
    assert all(a.n_tokens == 8 or a.finished for a in batched[:3])
    with pytest.raises(ValueError, match="no room"):
        student_answers(student, [EvalPrompt("long", [{"role": "user", "content": "z" * 40}])])
    # temperature > 0: seeded samples, the same for the same seed, other than greedy and another seed's
    hot = [student_answers(student, prompts[:3], max_new_tokens=8, batch_size=3, temperature=1.5, seed=k) for k in (0, 0, 1)]
    assert [a.text for a in hot[0]] == [a.text for a in hot[1]]
    assert [a.text for a in hot[0]] != [a.text for a in batched[:3]] and [a.text for a in hot[0]] != [a.text for a in hot[2]]
    with pytest.raises(ValueError, match="temperature"):
        student_answers(student, prompts, temperature=-1.0)
