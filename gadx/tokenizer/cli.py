"""``gadx tokenizer``: train a sentencepiece tokenizer on local text files.

    gadx tokenizer --out out/tokenizer                       # the synthetic world's corpus (seconds)
    gadx tokenizer --out tok/ --vocab-size 4000 a.txt b.txt  # one training text per line
    gadx tokenizer --out tok/ --chat-template llama3 data.txt
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gadx.tokenizer.train import train_sentencepiece


def _read_texts(files: list[str]) -> list[str]:
    texts = []
    for name in files:
        path = Path(name)
        if not path.is_file():
            raise ValueError(f"{path}: training text file not found")
        texts += path.read_text(encoding="utf-8").splitlines()
    return texts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="gadx tokenizer", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="*", help="UTF-8 text files, one example per line (default: the world corpus)")
    ap.add_argument("--out", required=True, help="output folder (tokenizer.model + tokenizer_config.json)")
    ap.add_argument("--vocab-size", type=int, default=640)
    ap.add_argument("--chat-template", default="chatml", choices=["chatml", "llama3"])
    ap.add_argument("--world-seed", type=int, default=0, help="seed of the synthetic world (no files given)")
    args = ap.parse_args(argv)
    try:
        if args.files:
            texts = _read_texts(args.files)
        else:
            from gadx.world import World

            texts = World(seed=args.world_seed).corpus()
        tok = train_sentencepiece(texts, args.out, args.vocab_size, chat_template=args.chat_template)
    except ValueError as e:
        print(f"gadx tokenizer: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: vocab_size={tok.vocab_size} eos={tok.special_tokens['eos_token']!r} "
          f"({len(texts)} training texts)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
