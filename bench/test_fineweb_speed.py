"""bench/fineweb_speed.py at a toy size: a small jsonl corpus (given as --corpus, big enough for --mb, so
the stdlib + pydocs corpus is never built), the baseline's shards, the corpus builder on stand-in
texts, and the token-count check between the two sides. Speeds are not asserted."""
import json
import os
import random
import re
import subprocess
import sys

import numpy as np
import pytest
import tiktoken

import fineweb
from bench import REPO_ROOT
from bench import fineweb_speed as bench_fineweb

ENC = tiktoken.get_encoding("gpt2")
# "  baseline   13,543 tokens in   0.04 s =   0.32 M tokens/s;  0.06 CPU-s =  0.22 M tokens/CPU-s; load 0.45"
RUN_ROW = re.compile(r"^\s+(baseline|fineweb\.py)\s+([\d,]+) tokens in\s+(\S+) s =\s+(\S+) M tokens/s;"
                     r"\s+(\S+) CPU-s =\s+(\S+) M tokens/CPU-s; load \S+$")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """400 short documents (~55 KB), enough for the 1% hash val split to get some."""
    rng = random.Random(0)
    words = ["the", "king", "über", "東京", "😀", "def", "x = 1", "\n", "shall", "<|endoftext|>"]
    docs = [f"doc {i}: " + " ".join(rng.choice(words) for _ in range(rng.randint(1, 40))) for i in range(400)]
    path = tmp_path_factory.mktemp("corpus") / "toy.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    return str(path), docs


def token_stream(docs):
    """The nanoGPT script's output: [eot] + encode_ordinary(doc) for each document, in order."""
    return [t for d in docs for t in [ENC.eot_token, *ENC.encode_ordinary(d)]]


def run_main(monkeypatch, capsys, *flags):
    monkeypatch.setattr(sys, "argv", ["bench/fineweb_speed.py", *flags])
    bench_fineweb.main()
    return capsys.readouterr().out


def test_both_sides_write_the_same_tokens_and_print_their_figures(corpus, monkeypatch, capsys):
    path, docs = corpus
    expected = len(token_stream(docs))
    out = run_main(monkeypatch, capsys, "--corpus", path, "--mb", "0.01", "--workers", "2", "--repeats", "2")
    assert os.path.getsize(path) > 0.01e6  # the toy corpus was used as it is
    runs = [m.groups() for line in out.splitlines() if (m := RUN_ROW.match(line))]
    assert [r[0] for r in runs] == ["baseline", "fineweb.py", "fineweb.py", "baseline"]  # ABBA order
    for _, tokens, seconds, rate, cpu, cpu_rate in runs:
        assert int(tokens.replace(",", "")) == expected
        assert float(seconds) > 0 and float(rate) > 0 and float(cpu) >= 0 and float(cpu_rate) >= 0
    assert "best of 2: baseline" in out and f"(same {expected:,} tokens)" in out
    assert "median of 2" in out and "M tokens per CPU-second" in out
    assert re.search(r"1 process, no pipeline: \d+\.\d\d M tokens/s", out)


def test_differing_token_counts_stop_the_benchmark(corpus, monkeypatch, capsys):
    real = bench_fineweb.ours
    monkeypatch.setattr(bench_fineweb, "ours", lambda *args: real(*args) + 1)
    with pytest.raises(SystemExit, match="token counts differ"):
        run_main(monkeypatch, capsys, "--corpus", corpus[0], "--mb", "0.01", "--workers", "1", "--repeats", "1")


def test_baseline_shards_are_the_token_stream_cut_val_first(corpus, tmp_path):
    path, docs = corpus
    expected = token_stream(docs)
    (tmp_path / "base").mkdir()
    total = bench_fineweb.baseline(path, str(tmp_path / "base"), 1, shard_tokens=997)
    names = sorted(os.listdir(tmp_path / "base"), key=lambda n: int(n[-10:-4]))
    assert names[0] == "val_000000.npy" and all(n.startswith("train_") for n in names[1:])
    shards = [np.load(tmp_path / "base" / n) for n in names]
    assert all(s.dtype == np.uint16 and len(s) == 997 for s in shards[:-1]) and 0 < len(shards[-1]) <= 997
    assert total == len(expected) and np.concatenate(shards).tolist() == expected
    # fineweb.py's side counts the same tokens (its own split and shard format)
    assert bench_fineweb.ours(path, str(tmp_path / "ours"), 1, shard_tokens=997) == total


def test_make_corpus_cuts_code_once_and_prose_until_big_enough(tmp_path, monkeypatch):
    code_file = tmp_path / "mod.py"
    code = "def f(x):\n    return x + 1  # ünïcode\n" * 200
    code_file.write_text(code, encoding="utf-8")
    prose = "Some prose about the standard library. " * 150
    monkeypatch.setattr(fineweb, "stdlib_modules", lambda: [("mod", str(code_file))])
    monkeypatch.setattr(fineweb, "pydocs_documents", lambda: iter([prose]))
    out = tmp_path / "corpus.jsonl"
    bench_fineweb.make_corpus(str(out), 0.03)
    assert os.path.getsize(out) >= 0.03e6
    docs = [json.loads(line)["text"] for line in out.read_text(encoding="utf-8").splitlines()]
    assert all(d in code or d in prose for d in docs)
    from_code = [d for d in docs if d in code]
    assert sum(map(len, from_code)) == len(code)              # the code exactly once,
    assert "".join(from_code) != code                         # its pieces shuffled
    rounds, rest = divmod(sum(map(len, docs)) - len(code), len(prose))
    assert rest == 0 and rounds >= 2                          # then the prose, whole, as often as needed
    assert sum(len(d) >= 200 for d in docs) >= len(docs) - 1 - rounds  # only each text's tail is shorter
    again = tmp_path / "again.jsonl"
    bench_fineweb.make_corpus(str(again), 0.03)
    assert again.read_bytes() == out.read_bytes()             # fixed seed: the same corpus


def test_make_corpus_keeps_a_big_enough_file(tmp_path, monkeypatch):
    monkeypatch.setattr(fineweb, "stdlib_modules", lambda: pytest.fail("rebuilt an existing corpus"))
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"text": "kept"}\n' * 1000)
    bench_fineweb.make_corpus(str(path), 0.01)
    assert path.read_text() == '{"text": "kept"}\n' * 1000


def test_help():
    out = subprocess.run([sys.executable, "-m", "bench.fineweb_speed", "--help"], cwd=REPO_ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert "--corpus" in out and "--mb" in out and "--repeats" in out
