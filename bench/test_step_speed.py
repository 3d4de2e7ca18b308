"""bench/step_speed.py at a toy size: the interleaved table, the plain baseline's faithfulness, the
memory measurement in a fresh process, and its errors."""
import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from bench import REPO_ROOT
from bench import step_speed as ss

# A vocabulary that is a multiple of 128 has no padding columns: there the two losses are one
# formula computed two ways, and must agree.
TOY = ["--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--seq-len", "16", "--micro-batch", "2",
       "--vocab", "256", "--rounds", "3", "--steps", "1"]


def test_toy_run_prints_its_table_and_the_same_loss_twice(capsys):
    result = ss.main(TOY + ["--memory", "timed"])
    assert result["first_loss"]["ours"] == pytest.approx(result["first_loss"]["plain"], abs=1e-5)
    assert abs(result["first_loss"]["ours"] - math.log(256)) < 0.5  # a fresh model: about uniform
    rounds = result["rounds"]
    assert [r["order"] for r in rounds] == ["AB", "BA", "AB"]  # interleaved, alternating
    for r in rounds:
        assert r["ratio"] == pytest.approx(r["seconds"]["ours"] / r["seconds"]["plain"]) and r["ratio"] > 0
        assert r["cpu_ratio"] == pytest.approx(r["cpu"]["ours"] / r["cpu"]["plain"]) and r["cpu_ratio"] > 0
    assert result["median_ratio"] == sorted(r["ratio"] for r in rounds)[1]
    assert result["median_cpu_ratio"] == sorted(r["cpu_ratio"] for r in rounds)[1]
    [memory] = result["memory"]
    for name in ("ours", "plain"):
        m = memory[name]
        assert 0 < m["built"] <= m["peak"] and m["extra"] == m["peak"] - m["built"] > 0
        assert m["loss"] == pytest.approx(result["first_loss"][name], abs=1e-5)  # the same step, elsewhere
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "1 thread(s)" in lines[0] and "load average" in lines[0]
    table = lines[lines.index(next(line for line in lines if line.split()[:2] == ["round", "order"])):]
    assert [line.split()[:2] for line in table[1:4]] == [["1", "AB"], ["2", "BA"], ["3", "AB"]]
    assert f"median ours/plain step time: {result['median_ratio']:.3f}" in out
    assert f"median ours/plain CPU time per step: {result['median_cpu_ratio']:.3f}" in out
    assert "target" not in out  # a toy shape claims no target
    assert lines[-1].startswith("load average at the end:")


def test_plain_gpt_is_the_same_model_with_the_full_width_loss():
    config = ss.Shape(n_layer=2, n_head=2, n_embd=32, seq_len=16, micro_batch=2, vocab_size=300).config()
    torch.manual_seed(0)
    ours = ss.tg.GPT(config)
    plain = ss.PlainGPT(config)
    plain.load_state_dict(ours.state_dict())
    x, y = ss.OneBatch(ss.Shape(2, 2, 32, 16, 2, 300)).next_batch()
    logits, _ = ours(x)
    full, plain_loss = plain(x, y)
    assert full.shape[-1] == config.padded_vocab_size == 384
    assert torch.allclose(full[..., :300], logits, atol=1e-6)  # the same trunk and head
    _, our_loss = ours(x, y)
    assert our_loss.item() == pytest.approx(F.cross_entropy(logits.flatten(0, 1), y.flatten()).item(), abs=1e-5)
    # The plain softmax also gives the 84 zero-logit padding columns some probability: a higher loss.
    assert 0 < plain_loss.item() - our_loss.item() < math.log(384 / 300)


def test_memory_is_measured_in_a_process_of_its_own():
    # A child's getrusage peak would start at its parent's (it survives exec on Linux): hold more
    # memory here than a toy child ever needs, and the child must not be charged for it.
    ballast = torch.ones(150_000_000)  # 600 MB, touched
    toy = ss.Shape(n_layer=1, n_head=1, n_embd=16, seq_len=8, micro_batch=1, vocab_size=128)
    m = ss.measure_memory(toy, "ours", threads=1)
    assert 0 < m["extra"] and m["built"] <= m["peak"] < ss.rss_now()
    del ballast


@pytest.mark.parametrize("flags,message", [
    (["--n-embd", "30", "--n-head", "4"], "--n-embd 30 does not divide by --n-head 4"),
    (["--rounds", "0"], "must be >= 1"),
])
def test_bad_settings_are_one_line_errors(flags, message):
    with pytest.raises(SystemExit) as e:
        ss.main(TOY + flags)
    assert str(e.value).startswith("bench.step_speed: error: ") and message in str(e.value)
    assert "\n" not in str(e.value)


def test_help():
    out = subprocess.run([sys.executable, "-m", "bench.step_speed", "--help"], cwd=REPO_ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert "--rounds" in out and "--memory" in out and "--threads" in out
