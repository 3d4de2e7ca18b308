"""bench/fineweb_speed.py at a toy size: the plain script's shards, a real round of both programs on
a 400-document jsonl (kept in --corpus-dir under the name the benchmark looks for, so the stdlib +
pydocs corpus is never built), the CPU-seconds of a process tree, the ABBA order, the cache modes,
the ratios and the token-count check (with stand-in runs), and the corpus builder. Speeds are
not asserted."""
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
TOY_MB = 0.01
# "  round 1 plain      13,543 tokens in   0.04 s =  0.32 M tokens/s;   0.06 CPU-s =  0.22 M tokens/CPU-s; load 0.45"
RUN_ROW = re.compile(r"^  round (\d+) (plain|fineweb\.py)\s+([\d,]+) tokens in\s+(\S+) s =\s+(\S+) M tokens/s;"
                     r"\s+(\S+) CPU-s =\s+(\S+) M tokens/CPU-s; load \S+$")
# "| 0.1 MB | 13,543 | 1.20, 1.31 | 0.50, 0.62 | **2.40x** | 2.11x |"
TABLE_ROW = re.compile(r"^\| (\S+) MB \| ([\d,]+) \| (\S+), (\S+) \| (\S+), (\S+) \| \*\*(\S+)x\*\* \| (\S+)x \|$")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """400 short documents (~55 KB), enough for fineweb.py's 1% hash val split to get some,
    saved where the benchmark looks for its TOY_MB corpus."""
    rng = random.Random(0)
    words = ["the", "king", "über", "東京", "😀", "def", "x = 1", "\n", "shall", "<|endoftext|>"]
    docs = [f"doc {i}: " + " ".join(rng.choice(words) for _ in range(rng.randint(1, 40))) for i in range(400)]
    folder = tmp_path_factory.mktemp("corpus")
    path = bench_fineweb.corpus_path(str(folder), TOY_MB)
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(json.dumps({"text": d}) + "\n" for d in docs))
    return str(folder), path, docs


@pytest.fixture
def keep_affinity():
    cpus = os.sched_getaffinity(0)   # main() pins its own process (and so its children)
    yield
    os.sched_setaffinity(0, cpus)


def token_stream(docs):
    """build-nanogpt's output: [eot] + encode_ordinary(doc) for each document, in order."""
    return [t for d in docs for t in [ENC.eot_token, *ENC.encode_ordinary(d)]]


def run_main(monkeypatch, capsys, *flags):
    monkeypatch.setattr(sys, "argv", ["bench/fineweb_speed.py", *flags])
    bench_fineweb.main()
    return capsys.readouterr().out


def test_plain_script_writes_the_token_stream_cut_val_first(corpus, tmp_path):
    _, path, docs = corpus
    out = str(tmp_path / "plain")
    env = dict(os.environ, HF_DATASETS_CACHE=str(tmp_path / "hf"))
    subprocess.run(bench_fineweb.plain_command(path, out, 997, 2), cwd=REPO_ROOT, env=env, check=True,
                   capture_output=True)
    names = sorted(os.listdir(out), key=lambda n: int(n[-10:-4]))
    assert names[0] == "edufineweb_val_000000.npy" and all(n.startswith("edufineweb_train_") for n in names[1:])
    shards = bench_fineweb.plain_tokens(out)
    assert all(s.dtype == np.uint16 and len(s) == 997 for s in shards[:-1]) and 0 < len(shards[-1]) <= 997
    assert np.concatenate(shards).tolist() == token_stream(docs)
    assert os.listdir(tmp_path / "hf")   # `datasets` wrote its Arrow copy where it was told to


def test_a_real_round_of_both_programs(corpus, monkeypatch, capsys, keep_affinity):
    folder, path, docs = corpus
    expected = len(token_stream(docs))
    out = run_main(monkeypatch, capsys, "--mb", str(TOY_MB), "--corpus-dir", folder, "--rounds", "1",
                   "--cpus", "0", "--shard-tokens", "5000")
    assert os.path.getsize(path) < 0.1e6   # the toy corpus was used as it is, not rebuilt
    assert "both sides pinned to 0, 1 workers each, shards of 5,000 tokens, cold" in out
    runs = [m.groups() for line in out.splitlines() if (m := RUN_ROW.match(line))]
    assert [r[:2] for r in runs] == [("1", "plain"), ("1", "fineweb.py")]
    for *_, tokens, seconds, rate, cpu, cpu_rate in runs:
        assert int(tokens.replace(",", "")) == expected
        assert float(seconds) > 0 and float(rate) > 0 and float(cpu) > 0 and float(cpu_rate) > 0
    (row,) = [m.groups() for line in out.splitlines() if (m := TABLE_ROW.match(line))]
    assert int(row[1].replace(",", "")) == expected
    plain_wall, plain_cpu, ours_wall, ours_cpu, wall_ratio, cpu_ratio = map(float, row[2:])
    assert wall_ratio == pytest.approx(plain_wall / ours_wall, rel=0.02)   # one round: the ratio of its two runs
    assert cpu_ratio == pytest.approx(plain_cpu / ours_cpu, rel=0.02)
    assert re.search(r"tiktoken encode_ordinary alone, 1 process: \d+\.\d\d M tokens per CPU-second", out)


def test_cpu_seconds_count_the_workers_of_a_program(tmp_path):
    """RUSAGE_CHILDREN after the program exits includes its pool workers: two workers that each
    burn 0.3 CPU-seconds make at least 0.6, though the program itself only waits."""
    code = ("import multiprocessing as mp, time\n"
            "def burn(s):\n"
            "    end = time.process_time() + s\n"
            "    while time.process_time() < end: pass\n"
            "with mp.Pool(2) as pool: pool.map(burn, [0.3, 0.3], chunksize=1)\n")
    before = bench_fineweb._children_cpu_seconds()
    subprocess.run([sys.executable, "-c", code], check=True)
    assert bench_fineweb._children_cpu_seconds() - before >= 0.6


def test_rounds_alternate_abba():
    assert [bench_fineweb.round_order(r)[0] for r in range(4)] == ["plain", "fineweb.py", "plain", "fineweb.py"]
    assert all(sorted(bench_fineweb.round_order(r)) == sorted(bench_fineweb.SIDES) for r in range(4))


def fake_runs(monkeypatch, results):
    """Stand-in run_side: (tokens, wall, CPU) per side from `results`, recording each call."""
    calls = []

    def run_side(side, corpus, shard_tokens, workers, hf_cache=None):
        calls.append((side, hf_cache))
        return results[side]

    monkeypatch.setattr(bench_fineweb, "run_side", run_side)
    return calls


def test_ratios_are_the_plain_time_over_ours(corpus, monkeypatch, capsys, keep_affinity):
    calls = fake_runs(monkeypatch, {"plain": (1000, 3.0, 4.5), "fineweb.py": (1000, 1.5, 3.0)})
    out = run_main(monkeypatch, capsys, "--mb", str(TOY_MB), "--corpus-dir", corpus[0], "--rounds", "3")
    assert [side for side, _ in calls] == ["plain", "fineweb.py", "fineweb.py", "plain", "plain", "fineweb.py"]
    assert all(cache is None for _, cache in calls)   # cold: every plain run gets a fresh cache of its own
    (row,) = [m.groups() for line in out.splitlines() if (m := TABLE_ROW.match(line))]
    assert row[1:] == ("1,000", "3.00", "4.50", "1.50", "3.00", "2.00", "1.50")


def test_a_warm_cache_is_filled_once_untimed_then_shared(corpus, monkeypatch, capsys, keep_affinity):
    calls = fake_runs(monkeypatch, {"plain": (1000, 3.0, 4.5), "fineweb.py": (1000, 1.5, 3.0)})
    out = run_main(monkeypatch, capsys, "--mb", str(TOY_MB), "--corpus-dir", corpus[0], "--rounds", "2",
                   "--plain-cache", "warm")
    assert "warm `datasets` cache" in out
    plain_caches = [cache for side, cache in calls if side == "plain"]
    assert len(plain_caches) == 3 and plain_caches[0] and len(set(plain_caches)) == 1   # 1 untimed + 2 timed
    assert not os.path.exists(plain_caches[0])   # removed afterwards
    assert len([m for line in out.splitlines() if (m := RUN_ROW.match(line))]) == 4


def test_differing_token_counts_stop_the_benchmark(corpus, monkeypatch, capsys, keep_affinity):
    fake_runs(monkeypatch, {"plain": (1000, 3.0, 4.5), "fineweb.py": (1001, 1.5, 3.0)})
    with pytest.raises(SystemExit, match=r"token counts differ between runs: \[1000, 1001\]"):
        run_main(monkeypatch, capsys, "--mb", str(TOY_MB), "--corpus-dir", corpus[0], "--rounds", "1")


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


def test_help_and_bad_flags():
    def run(*flags):
        return subprocess.run([sys.executable, "-m", "bench.fineweb_speed", *flags], cwd=REPO_ROOT,
                              capture_output=True, text=True)
    out = run("--help").stdout
    assert all(flag in out for flag in ("--mb", "--corpus-dir", "--rounds", "--cpus", "--workers", "--plain-cache"))
    assert "--rounds must be at least 1" in run("--rounds", "0").stderr
    assert "--cpus takes CPU numbers" in run("--cpus", "first").stderr
    assert "this process may use only CPUs" in run("--cpus", "4096").stderr
