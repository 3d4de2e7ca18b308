"""bench/modern_recipe.py at a toy size: the runs it makes, how it reads the crossing step off a
curve, a short real run of four recipes on a 30-document slice of pydocs, and its errors."""
import json
import subprocess
import sys

import pytest
import torch

import train_gpt2 as tg
from bench import REPO_ROOT
from bench import modern_recipe as mr

TOY = ["--steps", "6", "--eval_every", "2", "--model", "tiny", "--max_docs", "30", "--vocab", "300",
       "--val_fraction", "0.25", "--threads", "1",
       "--train", "micro_batch_size=4", "seq_len=32", "total_batch_size=128", "val_tokens=1024"]


@pytest.fixture
def keep_threads():
    threads = torch.get_num_threads()  # main() sets torch's (process-wide) thread count
    yield
    torch.set_num_threads(threads)


def test_runs_cover_each_option_both_ways():
    options = tg.RECIPES["modern"]
    assert len(mr.RUNS) == 2 + 2 * len(options)
    assert mr.RUNS["gpt2+qk_norm"] == {"recipe": "gpt2", "qk_norm": True}
    assert mr.RUNS["modern-rope"] == {"recipe": "modern", "position": "learned"}
    assert mr.RUNS["gpt2+untied_head"] == {"recipe": "gpt2", "tie_head": False}
    assert mr.RUNS["gpt2+muon"] == {"recipe": "gpt2", "muon_lr": options["muon_lr"]}
    assert mr.RUNS["modern-muon"] == {"recipe": "modern", "muon_lr": 0.0}
    for name, settings in mr.RUNS.items():  # each ablation run differs from its base in one option
        config = tg.TrainConfig(**settings)
        base = tg.TrainConfig(recipe=settings["recipe"])
        changed = {k for k in options if tg.recipe_options(config).get(k, mr.gpt2_value(k))
                   != tg.recipe_options(base).get(k, mr.gpt2_value(k))}
        assert len(changed) == (0 if name in ("gpt2", "modern") else 1), name


def test_steps_to_reach_reads_straight_lines_between_evaluations():
    curve = [(0, 8.0), (10, 4.0), (20, 3.0), (30, 2.5)]
    assert mr.steps_to_reach(curve, 3.0) == 20
    assert mr.steps_to_reach(curve, 3.5) == pytest.approx(15.0)   # halfway from 4.0 down to 3.0
    assert mr.steps_to_reach(curve, 9.0) == 0.0                   # already there at the start
    assert mr.steps_to_reach(curve, 2.0) is None                  # never
    assert mr.steps_to_reach([(0, 5.0), (10, 2.0), (20, 4.0)], 3.0) == pytest.approx(20 / 3)  # the first


def test_a_toy_run_reports_curves_crossing_and_the_ablation_table(tmp_path, capsys, keep_threads):
    out = tmp_path / "bench"
    summary = mr.main(["--out", str(out), "--runs", "gpt2", "modern", "gpt2+qk_norm", "modern-muon", *TOY])
    runs = summary["runs"]
    assert list(runs) == ["gpt2", "modern", "gpt2+qk_norm", "modern-muon"]
    for r in runs.values():
        assert [step for step, _ in r["curve"]] == [0, 2, 4, 6] and r["final"] == r["curve"][-1][1]
        assert r["ms_per_step"] > 0 and r["tokens_per_step"] == 128
    assert runs["modern"]["params"] > runs["gpt2"]["params"]  # the untied head (no wpe, no LayerNorm gains)
    assert summary["target"] == runs["gpt2"]["final"]
    assert summary["crossing_step"] == mr.steps_to_reach(runs["modern"]["curve"], summary["target"])
    # every run is train_gpt2 with first_run.py's settings and its own recipe flags
    log = (out / "logs" / "modern_minus_muon" / "log.txt").read_text()
    assert "recipe modern {" in log and "'muon_lr': 0.0" in log
    ckpt = torch.load(out / "logs" / "gpt2_plus_qk_norm" / "ckpt_000006.pt", weights_only=True)
    assert ckpt["config"]["qk_norm"] is True and ckpt["config"]["max_lr"] == 3e-3  # first_run.py's LR
    text = capsys.readouterr().out
    assert "GPT-2's recipe:" in text and "modern recipe:" in text
    assert "target <= 50%" in text or "reaches" in text and "never" in text
    assert "| gpt2+qk_norm | --recipe=gpt2 --qk_norm=True |" in text and " vs gpt2 |" in text
    assert " vs modern |" in text
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "results.json").read_text())["runs"]["gpt2"]["final"] == runs["gpt2"]["final"]


@pytest.mark.parametrize("argv,message", [
    (["--train", "qk_norm=true"], "--train qk_norm=true: each run sets qk_norm itself"),
    (["--train", "max_steps=5"], "--train max_steps=5: each run sets max_steps itself"),
    (["--runs", "gpt3"], "invalid choice: 'gpt3'"),
    (["--steps", "0"], "--steps 0: must be positive"),
])
def test_bad_flags_are_one_line_errors(argv, message, capsys):
    with pytest.raises(SystemExit):
        mr.parse_args(argv)
    assert message in capsys.readouterr().err


def test_help():
    out = subprocess.run([sys.executable, "-m", "bench.modern_recipe", "--help"], cwd=REPO_ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0 and "--runs" in out.stdout and "gpt2+muon" in out.stdout
