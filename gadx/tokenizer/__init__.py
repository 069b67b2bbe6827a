"""Tokenizers and chat templates.

    from gadx.tokenizer import load_tokenizer, train_sentencepiece, check_vocab
    tok = load_tokenizer("ckpt/")
    save_hf_tokenizer(tok, "out/student_hf")   # AutoTokenizer encodes as gadx does
    prompt_ids = tok.encode_chat([{"role": "user", "content": "hello"}])
"""
from gadx.tokenizer.chat import BUILTIN as BUILTIN_TEMPLATES
from gadx.tokenizer.hf_export import save_hf_tokenizer
from gadx.tokenizer.tokenizer import Tokenizer, check_vocab, load_tokenizer
from gadx.tokenizer.train import train_sentencepiece

__all__ = ["BUILTIN_TEMPLATES", "Tokenizer", "check_vocab", "load_tokenizer", "save_hf_tokenizer", "train_sentencepiece"]
