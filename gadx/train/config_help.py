"""``python -m gadx.train --help`` and ``--print-config``: every config key with its type,
default and the comment written beside it in config.py; the resolved config as TOML (which
``--config`` reads back).
"""
from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import typing
from typing import Any

from . import config as config_module
from .config import TrainConfig


def _comments() -> dict[tuple[str, str], str]:
    """(dataclass name, field name) -> the comment on the field's line, or the comment block above it."""
    src = inspect.getsource(config_module)
    lines = src.splitlines()
    out = {}
    for node in ast.walk(ast.parse(src)):
        if not isinstance(node, ast.ClassDef):
            continue
        for item in node.body:
            if not isinstance(item, ast.AnnAssign) or not isinstance(item.target, ast.Name):
                continue
            line = lines[item.lineno - 1]
            text = line.split("#", 1)[1].strip() if "#" in line else ""
            above, i = [], item.lineno - 2
            while i >= 0 and lines[i].strip().startswith("#"):
                above.insert(0, lines[i].strip().lstrip("#").strip())
                i -= 1
            out[(node.name, item.target.id)] = " ".join(x for x in (" ".join(above), text) if x)
    return out


def _type_name(t: Any) -> str:
    args = [a for a in typing.get_args(t) if a is not type(None)]
    if args and len(args) < len(typing.get_args(t)):
        return f"{args[0].__name__} or none"
    return getattr(t, "__name__", str(t))


def config_keys(cfg: TrainConfig | None = None) -> list[tuple[str, str, Any, str]]:
    """(dotted key, type, default, help) for every leaf setting, in declaration order."""
    cfg = cfg or TrainConfig()
    notes = _comments()
    rows = []

    def walk(obj: Any, prefix: str) -> None:
        hints = typing.get_type_hints(type(obj))
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                walk(value, f"{prefix}{f.name}.")
            else:
                rows.append((prefix + f.name, _type_name(hints[f.name]), value, notes.get((type(obj).__name__, f.name), "")))

    walk(cfg, "")
    return rows


def keys_help() -> str:
    rows = config_keys()
    width = max(len(k) for k, *_ in rows)
    out = ["config keys (--set key=value; TOML tables in --config files mirror the dots):"]
    for key, typ, default, note in rows:
        out.append(f"  {key:<{width}}  {typ:<11} = {json.dumps(default)}" + (f"  # {note}" if note else ""))
    return "\n".join(out)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(v, ensure_ascii=False)  # a TOML basic string for everything a config holds


def to_toml(cfg: TrainConfig) -> str:
    """The resolved config as TOML (``None`` values, which TOML cannot write, as comments)."""
    out: list[str] = []

    def table(d: dict[str, Any], name: str) -> None:
        scalars = {k: v for k, v in d.items() if not isinstance(v, dict)}
        if scalars:
            out.append(f"[{name}]")
            for k, v in scalars.items():
                out.append(f"# {k} = (unset)" if v is None else f"{k} = {_toml_value(v)}")
            out.append("")
        for k, v in d.items():
            if isinstance(v, dict):
                table(v, f"{name}.{k}")

    for section, d in cfg.to_dict().items():
        table(d, section)
    return "\n".join(out)
