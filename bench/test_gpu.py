"""bench/gpu.py on the CPU at a toy size: its figures, the real-shard path, the out-of-memory
fallback and its errors. (Its GPU figures need a GPU; these tests check the machinery.)"""
import math
import subprocess
import sys

import pytest
import torch

import fineweb
from bench import REPO_ROOT
from bench import gpu as bench_gpu

TOY = ["--device", "cpu", "--models", "tiny", "--seq-len", "16", "--micro-batch", "2", "--total-batch", "64",
       "--steps", "2", "--warmup", "1"]


def test_toy_run_reports_its_figures(capsys):
    result = bench_gpu.main(TOY)["tiny"]
    assert result["micro_batch"] == 2 and result["grad_accum_steps"] == 2   # 64 tokens = 2 x (2 x 16)
    assert result["tokens_per_s"] > 0 and result["step_ms"] > 0
    assert abs(result["loss"] - math.log(50257)) < 0.5  # a fresh model on random ids: about uniform
    assert result["mfu"] is None and result["peak_memory_gib"] is None  # CPU: no peak FLOP/s, no CUDA memory
    assert result["params"] == sum(p.numel() for p in bench_gpu.tg.GPT(bench_gpu.tg.GPTConfig(
        **bench_gpu.tg.MODEL_PRESETS["tiny"])).parameters())
    out = capsys.readouterr().out
    assert "tokens/s" in out and out.strip().splitlines()[-1].startswith("tiny")


def test_real_shards_go_through_the_real_loader(tmp_path):
    text = "The quick brown fox jumps over the lazy dog. " * 200
    fineweb.write_shards(str(tmp_path), [text], [text[:2000]], "gpt2", "test")
    result = bench_gpu.main(TOY + ["--data-dir", str(tmp_path)])["tiny"]
    assert math.isfinite(result["loss"]) and result["tokens_per_s"] > 0


def test_bf16_tracks_float32_from_the_same_start(capsys):
    track = bench_gpu.main(TOY + ["--dtype", "bfloat16", "--track-float32", "30"])["tiny"]["track"]
    assert len(track["float32"]) == len(track["mixed"]) == 30
    assert track["float32"][0] - track["float32"][-1] > 0.5  # the repeating batches are being learnt
    assert 0 < track["max_difference"] < 0.05  # bf16 did run (not bit-equal), and follows float32 closely
    assert "largest difference" in capsys.readouterr().out
    bench_gpu.main(TOY + ["--track-float32", "5"])  # CPU default: float32 autocast, nothing to compare
    assert "nothing to compare" in capsys.readouterr().out


def test_random_tokens_repeat_with_a_period():
    loader = bench_gpu.RandomTokens(2, 8, 100, period=3)
    batches = [loader.next_batch()[0] for _ in range(6)]
    assert all(torch.equal(batches[i], batches[i + 3]) for i in range(3))
    assert not torch.equal(batches[0], batches[1])
    x, y = bench_gpu.RandomTokens(2, 8, 100).next_batch()
    assert torch.equal(x[:, 1:], y[:, :-1]) and x.shape == (2, 8) and int(x.max()) < 100


def test_micro_batch_is_halved_until_it_fits(capsys):
    def run(micro_batch):
        if micro_batch > 8:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return {"micro_batch": micro_batch}

    assert bench_gpu.largest_fitting(bench_gpu.halvings(64), run) == {"micro_batch": 8}
    assert "micro batch 16: out of memory" in capsys.readouterr().out
    assert bench_gpu.largest_fitting([2, 1], lambda b: run(100)) is None
    assert bench_gpu.halvings(64) == [64, 32, 16, 8, 4, 2, 1] and bench_gpu.halvings(6) == [6, 3, 1]


@pytest.mark.parametrize("flags,message", [
    (["--seq-len", "128"], "--seq-len 128 is longer than tiny's block size 64"),
    (["--total-batch", "100"], "--total-batch 100 is not a multiple of micro batch x seq len = 2 x 16"),
    (["--data-dir", "/nonexistent/shards"], "/nonexistent/shards"),
])
def test_bad_settings_are_one_line_errors(flags, message):
    with pytest.raises(SystemExit) as e:
        bench_gpu.main(TOY + flags)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_help():
    out = subprocess.run([sys.executable, "-m", "bench.gpu", "--help"], cwd=REPO_ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert "--micro-batch" in out and "--data-dir" in out and "--suite" in out


# --suite at toy size: every row of the GPU suite, on the CPU. Row(...) keys as suite_rows makes them.
SUITE_TOY = ["--suite", "--device", "cpu", "--models", "tiny", "laptop", "--seq-len", "16", "--micro-batch", "4",
             "--total-batch", "128", "--steps", "2", "--warmup", "1"]
Row = bench_gpu.Row


def test_suite_runs_every_row_in_one_table(monkeypatch, capsys):
    # Inductor's C++ build takes ~10 s per compiled row on this CPU; dynamo's "eager" backend still
    # captures the whole model (the chunked loss's autograd.Function included) in about 2 s.
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model: real_compile(model, backend="eager"))
    results = bench_gpu.main(SUITE_TOY)
    assert list(results) == [Row("tiny", "chunked", False, 4), Row("tiny", "chunked", True, 4),
                             Row("tiny", "plain", False, 4), Row("tiny", "plain", True, 4),
                             Row("laptop", "chunked", False, 4),
                             Row("tiny", "chunked", True, 2), Row("tiny", "chunked", True, 1)]
    r = {(k.preset, k.loss, k.compile, k.micro_batch): v for k, v in results.items()}
    assert r["tiny", "chunked", True, 1]["grad_accum_steps"] == 8   # 128 tokens = 8 x (1 x 16)
    assert all(v["steps"] == 2 and v["tokens_per_s"] > 0 and v["row_s"] > 0 for v in results.values())
    # Same weights, same batches: compiling changes no result, and the plain loss differs from ours
    # only by the probability its softmax gives the 47 zero padding columns (log(50304/50257) at most).
    assert r["tiny", "chunked", True, 4]["loss"] == pytest.approx(r["tiny", "chunked", False, 4]["loss"], abs=1e-4)
    assert r["tiny", "plain", True, 4]["loss"] == pytest.approx(r["tiny", "plain", False, 4]["loss"], abs=1e-4)
    assert 0 < r["tiny", "plain", False, 4]["loss"] - r["tiny", "chunked", False, 4]["loss"] < math.log(50304 / 50257)
    out = capsys.readouterr().out.splitlines()
    assert out[1].split()[:3] == ["model", "loss", "fn"] and len([line for line in out if line.startswith(("tiny", "laptop"))]) == 7
    assert any(line.startswith("compiled / eager (chunked loss): tokens/s") for line in out)
    assert any(line.startswith("chunked / plain loss (compiled): tokens/s") for line in out)
    assert out[-1].startswith("suite: 7 rows in")


def test_suite_finds_the_largest_micro_batch_that_fits(monkeypatch, capsys):
    real_measure = bench_gpu.measure

    def measure(row, *args, fits=2):  # laptop "runs out of memory" above micro batch `fits`
        if row.preset == "laptop" and row.micro_batch > fits:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real_measure(row, *args)

    monkeypatch.setattr(bench_gpu, "measure", measure)
    results = bench_gpu.main(SUITE_TOY + ["--compile", "false"])
    assert results[Row("laptop", "chunked", False, 4)]["micro_batch"] == 2
    assert "micro batch 4: out of memory" in capsys.readouterr().out
    monkeypatch.setattr(bench_gpu, "measure", lambda row, *args: measure(row, *args, fits=0))
    assert bench_gpu.main(SUITE_TOY + ["--compile", "false"])[Row("laptop", "chunked", False, 4)] is None
    assert "laptop       chunked  no      does not fit, even at micro batch 1" in capsys.readouterr().out


def test_suite_starts_no_row_after_its_budget(capsys):
    results = bench_gpu.main(SUITE_TOY + ["--compile", "false", "--suite-budget", "0"])
    assert list(results) == [Row("tiny", "chunked", False, 4)]  # the first row always runs
    out = capsys.readouterr().out
    assert out.count("skipped: the 0 s suite budget is spent") == 4 and "suite: 1 rows in" in out


def test_suite_defaults_and_flags_given():
    args = bench_gpu.parse_args(["--suite"])
    assert (args.models, args.total_batch, args.steps, args.warmup) == (["gpt2", "gpt2-xl"], 2**17, 5, 2)
    assert args.micro_batch == 64 and args.row_budget == 20
    assert bench_gpu.suite_rows(["gpt2", "gpt2-xl"], 64, True)[-3:] == [
        Row("gpt2-xl", "chunked", False, 64), Row("gpt2", "chunked", True, 32), Row("gpt2", "chunked", True, 16)]
    assert bench_gpu.parse_args(["--suite", "--steps", "9"]).steps == 9  # a flag given wins
    plain = bench_gpu.parse_args([])
    assert (plain.models, plain.total_batch, plain.steps, plain.row_budget) == (["gpt2"], 524288, 10, None)
