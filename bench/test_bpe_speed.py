"""bench/bpe_speed.py at a toy size: the training table and the encode comparison on a small text given
as --shakespeare (so the tests need no data file), the stdlib corpus, and the missing-file path.
Timings are only checked to be figures, never against a speed goal."""
import math
import os
import re
import subprocess
import sys

import bpe
from bench import REPO_ROOT
from bench import bpe_speed as bench_bpe

# "   300        0.00s         0.00s          0.01s     0.09  43": vocab, ours 1 proc, ours N procs, HF, ours/HF, merges
TRAIN_ROW = re.compile(r"^\s*(\d+)\s+(\S+)s\s+(\S+)s\s+(\S+)s\s+(\S+)\s+(\d+)$")
# "          gpt2: bpe.py pure Python  23.92 MB/s   tiktoken  24.09 MB/s   (identical ids)"
ENCODE_ROW = re.compile(r"^\s*(.+?): bpe.py pure Python\s+(\S+) MB/s\s+tiktoken\s+(\S+) MB/s\s+\((.+)\)$")


def run_main(monkeypatch, capsys, *flags):
    monkeypatch.setattr(sys, "argv", ["bench/bpe_speed.py", *flags])
    bench_bpe.main()
    return capsys.readouterr().out


def rows(pattern, out):
    return [m.groups() for line in out.splitlines() if (m := pattern.match(line))]


def test_full_run_prints_a_row_per_vocab_size_and_identical_ids(toy_text, monkeypatch, capsys):
    out = run_main(monkeypatch, capsys, "--corpus", "shakespeare", "--shakespeare", toy_text,
                   "--vocab-sizes", "300", "2000", "--repeat", "1", "--workers", "2")
    assert "## training on tinyshakespeare.txt" in out and "ours 2 procs" in out
    table = rows(TRAIN_ROW, out)
    assert [int(r[0]) for r in table] == [300, 2000]
    for _, serial, parallel, hf, ratio, _ in table:
        assert all(math.isfinite(float(x)) and float(x) >= 0 for x in (serial, parallel, hf, ratio))
    # merges column: vocab 300 = 256 bytes + 43 merges + <|endoftext|>; at 2000 the toy text runs out of pairs
    with open(toy_text, encoding="utf-8") as f:
        available = len(bench_bpe.train_ours([f.read()], 2000, 1).merges)
    assert int(table[0][5]) == 300 - 256 - 1 and int(table[1][5]) == available < 2000 - 257
    encoded = rows(ENCODE_ROW, out)
    assert [r[0].strip() for r in encoded] == ["gpt2", "trained 32768"]
    for _, ours, tik, same in encoded:
        assert same == "identical ids" and float(ours) > 0 and float(tik) > 0
    assert out.strip().splitlines()[-1].startswith("done (load average")


def test_quick_run_is_vocab_4096_and_gpt2_encoding_only(toy_text, monkeypatch, capsys):
    out = run_main(monkeypatch, capsys, "--quick", "--corpus", "shakespeare", "--shakespeare", toy_text,
                   "--vocab-sizes", "300", "--workers", "1", "--no-hf")
    table = rows(TRAIN_ROW, out)
    assert [int(r[0]) for r in table] == [4096]            # --quick overrides --vocab-sizes
    assert table[0][3] == "nan" and table[0][4] == "nan"    # --no-hf: no HF figure, no ratio
    assert [r[0].strip() for r in rows(ENCODE_ROW, out)] == ["gpt2"]


def test_no_encode_skips_the_encode_table(toy_text, monkeypatch, capsys):
    out = run_main(monkeypatch, capsys, "--corpus", "shakespeare", "--shakespeare", toy_text,
                   "--vocab-sizes", "300", "--repeat", "1", "--workers", "1", "--no-hf", "--no-encode")
    assert len(rows(TRAIN_ROW, out)) == 1 and not rows(ENCODE_ROW, out) and "## encoding" not in out


def test_missing_shakespeare_is_skipped_with_a_note(tmp_path, monkeypatch, capsys):
    missing = tmp_path / "nope" / "tinyshakespeare.txt"
    out = run_main(monkeypatch, capsys, "--corpus", "shakespeare", "--shakespeare", str(missing), "--no-hf")
    assert f"(skipping tinyshakespeare: {os.path.normpath(missing)} not found)" in out
    assert not rows(TRAIN_ROW, out) and "done (load average" in out


def test_encoding_reports_differing_ids(monkeypatch, capsys):
    text = "Hello world, this is a small test of the encoder. " * 20
    real = bpe.Tokenizer.encode_ordinary
    monkeypatch.setattr(bpe.Tokenizer, "encode_ordinary", lambda self, t: real(self, t)[:-1])  # drop one id
    bench_bpe.bench_encoding("broken", text, 1)
    assert "(IDS DIFFER)" in capsys.readouterr().out


def test_stdlib_corpus_stops_at_the_limit_with_whole_files(capsys):
    docs = bench_bpe.stdlib_corpus(50_000)
    sizes = [len(d.encode("utf-8")) for d in docs]
    assert len(docs) > 1 and sum(sizes) >= 50_000 > sum(sizes[:-1])   # whole files, stops once past the limit
    assert docs == bench_bpe.stdlib_corpus(50_000)                     # sorted walk: same every time
    bench_bpe.bench_training("stdlib", docs, [260], 1, 1, False)
    (row,) = rows(TRAIN_ROW, capsys.readouterr().out)
    assert int(row[0]) == 260 and int(row[5]) == 3


def test_best_time_keeps_the_fastest_run_and_the_result():
    calls = []
    t, result = bench_bpe.best_time(lambda: calls.append(1) or len(calls), 3)
    assert len(calls) == 3 and result == 3 and 0 <= t < 1


def test_help():
    out = subprocess.run([sys.executable, "-m", "bench.bpe_speed", "--help"], cwd=REPO_ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert "--vocab-sizes" in out and "--shakespeare" in out and "--no-hf" in out
