"""Byte-level BPE from scratch (skeleton: the shared interface other scripts rely on).

The full trainer/encoder lands with issue 3; this file already fixes the interface that
fineweb.py, train_gpt2.py and hellaswag.py use: `load_tokenizer(spec)` and `atomic_write`.
"""
import contextlib
import hashlib
import os
import tempfile
from dataclasses import dataclass

import tiktoken

EOT = "<|endoftext|>"  # GPT-2's end-of-text special token; every document is prefixed by it


@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """Write `path` all-or-nothing: a temp file beside it, fsync, then rename over it.

    A crash (or an exception inside the with-block) leaves any previous file intact and
    no half-written one behind."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


@dataclass
class LoadedTokenizer:
    """What the other scripts need of a tokenizer, whatever trained it."""
    spec: str                    # what the user asked for: "gpt2" or a path to a .model file
    identity: str                # stable id recorded in shard manifests: "tiktoken:gpt2" or "bpe:sha256:<hex>"
    encoding: tiktoken.Encoding  # fast (Rust) encoder with the same ranks, pattern and specials
    eot_id: int                  # id of <|endoftext|>
    vocab_size: int              # number of ids (max id + 1), specials included

    def encode_ordinary(self, text):
        return self.encoding.encode_ordinary(text)

    def encode(self, text, allowed_special=frozenset()):
        return self.encoding.encode(text, allowed_special=allowed_special)

    def decode(self, ids):
        return self.encoding.decode(list(ids))


def load_tokenizer(spec):
    """"gpt2" -> tiktoken's GPT-2; anything else is a path to a model saved by bpe.py."""
    if spec == "gpt2":
        enc = tiktoken.get_encoding("gpt2")
        return LoadedTokenizer(spec, "tiktoken:gpt2", enc, enc.eot_token, enc.n_vocab)
    raise NotImplementedError("bpe.py model files arrive with issue 3")
