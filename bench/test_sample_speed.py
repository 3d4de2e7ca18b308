"""bench/sample_speed.py at toy size: both modes agree, the figures are there, errors and --help."""
import subprocess
import sys

import pytest

import train_gpt2 as tg
from bench import REPO_ROOT
from bench import sample_speed


def test_toy_run_reports_a_speedup_of_identical_generations(capsys):
    result = sample_speed.main(["--model", "tiny", "--new_tokens", "80", "--rounds", "2"])  # 96 > block 64
    assert result["tokens_per_s_cache"] > 0 and result["tokens_per_s_recompute"] > 0
    assert result["speedup"] == pytest.approx(result["tokens_per_s_cache"] / result["tokens_per_s_recompute"])
    out = capsys.readouterr().out
    assert out.count("round ") == 4 and "speed-up" in out and "(same tokens)" in out


def test_a_cache_that_changes_the_tokens_is_caught(monkeypatch):
    real = tg.generate
    monkeypatch.setattr(tg, "generate", lambda *a, use_cache, **k: [[0]] if use_cache else real(*a, use_cache=use_cache, **k))
    with pytest.raises(SystemExit, match="bench.sample_speed: error: the cached and recomputed generations differ"):
        sample_speed.run("tiny", 4, 1, log=lambda line: None)


def test_help():
    out = subprocess.run([sys.executable, "-m", "bench.sample_speed", "--help"], cwd=REPO_ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0 and "--new_tokens" in out.stdout
