"""Train a small sentencepiece tokenizer; same as `gadx tokenizer`.

    python tools/train_tokenizer.py --out out/tokenizer [--vocab-size 640] [files...]
"""
from gadx.tokenizer.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
