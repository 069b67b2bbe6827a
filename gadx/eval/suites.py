"""Evaluation prompt sets ("suites").

    from gadx.eval.suites import load_suite
    suite = load_suite("vicuna")             # 80 prompts shipped in gadx/data/eval
    suite = load_suite("lmsys=/data/test.parquet")   # the paper's released test split
    suite = load_suite("my_prompts.jsonl", limit=32)

Built-in names: ``vicuna`` (80), ``selfinst`` (252), ``mtbench`` (80 first
turns). Anything else is a JSONL or Parquet file, optionally named as
``NAME=PATH`` (``lmsys`` must be given that way: its file is not shipped).
A row of a file gives its prompt through one of these columns, first match wins:
``messages`` or ``content`` (a list of {role, content} ending with a user turn),
``prompt`` / ``instruction`` / ``question`` (a string), ``turns`` (first item).
An optional ``teacher_response`` column is kept for judge-free diagnostics.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

BUILTIN_FILES = {
    "vicuna": "vicuna_question.jsonl",
    "selfinst": "selfinst_user_oriented.jsonl",
    "mtbench": "mtbench_question.jsonl",
}
_ROLES = ("system", "user", "assistant")
_STRING_COLUMNS = ("prompt", "instruction", "question")


@dataclass
class EvalPrompt:
    id: str
    messages: list[dict]  # chat messages, last one from the user
    teacher_response: str | None = None
    meta: dict = field(default_factory=dict)

    @property
    def question(self) -> str:
        """The text the judge sees as the user question: the user turn, or a transcript for multi-turn prompts."""
        if len(self.messages) == 1:
            return self.messages[0]["content"]
        return "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in self.messages)


@dataclass
class Suite:
    name: str
    prompts: list[EvalPrompt]
    source: str

    def __len__(self) -> int:
        return len(self.prompts)


def builtin_path(name: str):
    """A Traversable to a shipped suite file (works from an installed wheel too)."""
    return resources.files("gadx") / "data" / "eval" / BUILTIN_FILES[name]


def load_suite(spec: str, *, limit: int | None = None) -> Suite:
    """Load a built-in suite by name, or a file given as ``PATH`` or ``NAME=PATH``."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if spec in BUILTIN_FILES:
        res = builtin_path(spec)
        rows = _read_jsonl_text(res.read_text(encoding="utf-8"), str(res))
        prompts = [_builtin_row(spec, row, str(res), i) for i, row in enumerate(rows)]
        suite = Suite(spec, prompts, str(res))
    else:
        name, _, path_s = spec.partition("=") if "=" in spec else ("", "", spec)
        if spec == "lmsys" or (not path_s):
            raise ValueError(
                f"suite {spec!r}: not a built-in suite ({', '.join(BUILTIN_FILES)}) and no file given; "
                "pass the paper's LMSYS test parquet as lmsys=PATH, or any JSONL/Parquet file"
            )
        path = Path(path_s)
        if not path.is_file():
            raise ValueError(f"suite {spec!r}: not a built-in suite ({', '.join(BUILTIN_FILES)}) and no such file {path}")
        suite = Suite(name or path.stem, load_prompt_file(path), str(path))
    if limit is not None:
        suite.prompts = suite.prompts[:limit]
    return suite


def load_prompt_file(path: str | Path) -> list[EvalPrompt]:
    """Read a JSONL or Parquet prompt file; ValueError naming the file and row on bad input."""
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as e:  # pyarrow raises several types for corrupt files
            raise ValueError(f"{path}: not a readable Parquet file ({e})") from e
    elif path.suffix in (".jsonl", ".json"):
        rows = _read_jsonl_text(path.read_text(encoding="utf-8"), str(path))
    else:
        raise ValueError(f"{path}: unsupported prompt file type {path.suffix!r} (use .jsonl or .parquet)")
    if not rows:
        raise ValueError(f"{path}: no rows")
    return [_generic_row(row, str(path), i) for i, row in enumerate(rows)]


def _read_jsonl_text(text: str, where: str) -> list[dict]:
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: line {lineno}: invalid JSON ({e.msg})") from e
        if not isinstance(row, dict):
            raise ValueError(f"{where}: line {lineno}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows


def _user(text, where: str, i: int) -> list[dict]:
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{where}: row {i}: empty or non-string prompt {text!r:.80}")
    return [{"role": "user", "content": text}]


def _builtin_row(name: str, row: dict, where: str, i: int) -> EvalPrompt:
    try:
        if name == "selfinst":
            text = row["instruction"]
            extra = row["instances"][0]["input"]
            if extra.strip():
                text = text + "\n\n" + extra
            return EvalPrompt(str(row["id"]), _user(text, where, i),
                              meta={"human_reference": row["instances"][0]["output"]})
        return EvalPrompt(str(row["question_id"]), _user(row["turns"][0], where, i),
                          meta={"category": row.get("category")})
    except (KeyError, IndexError, TypeError) as e:
        raise ValueError(f"{where}: row {i}: missing field {e}") from e


def _check_messages(msgs, where: str, i: int) -> list[dict]:
    if not isinstance(msgs, (list, tuple)) or not msgs:
        raise ValueError(f"{where}: row {i}: messages must be a non-empty list, got {msgs!r:.80}")
    out = []
    for m in msgs:
        if not isinstance(m, dict) or m.get("role") not in _ROLES or not isinstance(m.get("content"), str):
            raise ValueError(f"{where}: row {i}: bad message {m!r:.80} (need role in {_ROLES} and string content)")
        out.append({"role": m["role"], "content": m["content"]})
    if out[-1]["role"] != "user":
        raise ValueError(f"{where}: row {i}: the last message must be from the user, got {out[-1]['role']!r}")
    return out


def _generic_row(row: dict, where: str, i: int) -> EvalPrompt:
    rid = str(row.get("id", row.get("question_id", i)))
    if row.get("messages") is not None:
        messages = _check_messages(row["messages"], where, i)
    elif row.get("content") is not None and not isinstance(row["content"], str):
        messages = _check_messages(row["content"], where, i)
    elif (col := next((c for c in _STRING_COLUMNS if row.get(c) is not None), None)) is not None:
        messages = _user(row[col], where, i)
    elif isinstance(row.get("turns"), (list, tuple)) and row["turns"]:
        messages = _user(row["turns"][0], where, i)
    else:
        raise ValueError(
            f"{where}: row {i}: no prompt column (need one of messages, content, "
            f"{', '.join(_STRING_COLUMNS)}, turns); has {sorted(row)}"
        )
    teacher = row.get("teacher_response")
    if teacher is not None and not isinstance(teacher, str):
        raise ValueError(f"{where}: row {i}: teacher_response must be a string, got {type(teacher).__name__}")
    return EvalPrompt(rid, messages, teacher_response=teacher)
