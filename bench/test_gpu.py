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
    assert "--micro-batch" in out and "--data-dir" in out
