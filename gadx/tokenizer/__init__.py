"""Tokenizers and chat templates.

    from gadx.tokenizer import load_tokenizer, train_sentencepiece, check_vocab
    tok = load_tokenizer("ckpt/")
    export_hf_tokenizer(tok, "out/student_hf")   # AutoTokenizer encodes as gadx does
    prompt_ids = tok.encode_chat([{"role": "user", "content": "hello"}])
"""
from gadx.tokenizer.chat import BUILTIN as BUILTIN_TEMPLATES
from gadx.tokenizer.export import export_hf_tokenizer
from gadx.tokenizer.tokenizer import Tokenizer, check_vocab, load_tokenizer
from gadx.tokenizer.train import train_sentencepiece

__all__ = ["BUILTIN_TEMPLATES", "Tokenizer", "check_vocab", "export_hf_tokenizer", "load_tokenizer", "train_sentencepiece"]
