"""bench/hellaswag_speed.py at a toy size: a 1-layer, 16-wide GPT on a few synthetic (or file) examples,
its table, the agreement between batch sizes, and its synthetic data. Speeds are not asserted."""
import ast
import json
import math
import re
import subprocess
import sys

import pytest
import torch

import hellaswag_scoring
from bench import REPO_ROOT
from bench import hellaswag_speed as bh

TOY = ["--n-layer", "1", "--n-head", "1", "--n-embd", "16", "--repeats", "1", "--threads", "1"]
# "   batched, 2/pass:   19.9 examples/s wall (0.30 s, 0.84x) |   19.9 examples per CPU-second (0.84x) | {...}"
ROW = re.compile(r"^\s*(one at a time|batched, \d+/pass):\s+(\S+) examples/s wall \((\S+) s, (\S+)x\) \|"
                 r"\s+(\S+) examples per CPU-second \((\S+)x\) \| (\{.*\})$")


@pytest.fixture
def keep_threads():
    threads = torch.get_num_threads()  # --threads sets torch's (process-wide) thread count
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tok():
    return bh.load_gpt2_tokenizer()


def run_main(monkeypatch, capsys, *flags):
    monkeypatch.setattr(sys, "argv", ["bench/hellaswag_speed.py", *flags])
    bh.main()
    return capsys.readouterr().out


def table(out):
    return {m[1]: m.groups()[1:] for line in out.splitlines() if (m := ROW.match(line))}


def test_toy_run_prints_each_mode_with_equal_counts(monkeypatch, capsys, keep_threads):
    out = run_main(monkeypatch, capsys, "--examples", "6", "--batch-sizes", "4", "2", *TOY)
    assert "1 layers, 16 wide" in out and "6 examples (synthetic)" in out and "1 threads" in out
    rows = table(out)
    assert list(rows) == ["one at a time", "batched, 2/pass", "batched, 4/pass"]  # 1 always run, sorted
    counts = [ast.literal_eval(r[-1]) for r in rows.values()]
    assert counts[0]["total"] == 6 and all(c == counts[0] for c in counts)
    assert 0 <= counts[0]["correct"] <= 6 and 0 <= counts[0]["correct_norm"] <= 6
    for per_s, seconds, speedup, per_cpu_s, cpu_speedup, _ in rows.values():
        assert all(float(x) > 0 and math.isfinite(float(x)) for x in (per_s, seconds, speedup, per_cpu_s, cpu_speedup))
    assert rows["one at a time"][2] == "1.00" and rows["one at a time"][4] == "1.00"  # its own baseline
    assert re.search(r"tokenizing alone: \d+ examples/s", out)


def test_data_file_is_read_and_cut_to_examples(tmp_path, monkeypatch, capsys, keep_threads):
    path = tmp_path / "hellaswag_val.jsonl"
    path.write_text("".join(json.dumps(ex) + "\n" for ex in bh.synthetic_examples(5, seed=3)))
    out = run_main(monkeypatch, capsys, "--data", str(path), "--examples", "3", "--batch-sizes", "3", *TOY)
    assert f"3 examples (file {path})" in out
    rows = table(out)
    assert list(rows) == ["one at a time", "batched, 3/pass"]
    assert all(ast.literal_eval(r[-1])["total"] == 3 for r in rows.values())


def test_disagreeing_modes_are_caught(monkeypatch, capsys, keep_threads):
    real = hellaswag_scoring.evaluate

    def off_by_one_when_batched(model, examples, tok, device, batch_size=16, **kw):
        counts = real(model, examples, tok, device, batch_size=batch_size, **kw)
        return {**counts, "correct": counts["correct"] + (batch_size > 1)}

    monkeypatch.setattr(hellaswag_scoring, "evaluate", off_by_one_when_batched)
    with pytest.raises(AssertionError, match="disagree"):
        run_main(monkeypatch, capsys, "--examples", "2", "--batch-sizes", "2", *TOY)


def test_time_modes_scores_every_example_in_each_mode(tok):
    model = bh.make_model(1, 1, 16)
    examples = bh.synthetic_examples(5)
    wall, cpu, counts = bh.time_modes(model, examples, tok, [1, 2, 5], repeats=2)
    assert set(wall) == set(cpu) == set(counts) == {1, 2, 5}
    assert all(0 < wall[b] < math.inf and 0 <= cpu[b] < math.inf for b in wall)
    assert counts[1] == counts[2] == counts[5] == hellaswag_scoring.evaluate(model, examples, tok, "cpu", batch_size=1)
    assert counts[1]["total"] == 5


def test_modes_take_turns_abba(tok, monkeypatch):
    seen, real = [], hellaswag_scoring.evaluate
    monkeypatch.setattr(hellaswag_scoring, "evaluate", lambda *a, batch_size, **kw: seen.append(batch_size) or
                        real(*a, batch_size=batch_size, **kw))
    bh.time_modes(bh.make_model(1, 1, 16), bh.synthetic_examples(2), tok, [1, 2, 5], repeats=3)
    assert seen == [1, 2, 5, 5, 2, 1, 1, 2, 5]


def test_memory_is_measured_per_batch_size_in_fresh_processes(monkeypatch, capsys, keep_threads):
    """Each batch size's peak in a process of its own: 4 examples per pass hold 4x the logits
    (rows x length x 50,257 floats) of one, so their scoring needs clearly more memory."""
    out = run_main(monkeypatch, capsys, "--examples", "4", "--batch-sizes", "4", "--memory", *TOY)
    peaks = {int(m[1]): (float(m[2]), float(m[3])) for line in out.splitlines()
             if (m := re.match(r"^peak memory, +(\d+)/pass: +(\S+) MB \((\S+) MB while scoring; a fresh process\)$", line))}
    assert set(peaks) == {1, 4}
    assert all(peak > extra > 0 for peak, extra in peaks.values())
    assert peaks[4][1] > 2 * peaks[1][1]
    assert "hellaswag_scoring.evaluate's default on a CPU: 1/pass" in out


def test_synthetic_examples_are_valid_hellaswag_and_fixed_by_seed():
    examples = bh.synthetic_examples(20)
    assert examples == bh.synthetic_examples(20) and examples != bh.synthetic_examples(20, seed=1)
    for i, ex in enumerate(examples):
        assert hellaswag_scoring.validate_example(ex, "synthetic") is ex and ex["ind"] == i
        assert 20 <= len(ex["ctx"].split()) <= 110
        assert all(8 <= len(e.split()) <= 35 for e in ex["endings"])


def test_model_is_gpt2_shaped_and_the_same_every_time():
    model = bh.make_model(1, 2, 16)
    assert not model.training and model.config.vocab_size == bh.GPT2_VOCAB == 50257
    assert model.config.n_layer == 1 and model.config.n_head == 2 and model.config.n_embd == 16
    again = bh.make_model(1, 2, 16).state_dict()
    assert all(torch.equal(v, again[k]) for k, v in model.state_dict().items())


def test_help():
    out = subprocess.run([sys.executable, "-m", "bench.hellaswag_speed", "--help"], cwd=REPO_ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert all(flag in out for flag in ("--batch-sizes", "--data", "--examples", "--memory", "--cpus"))
    assert "--memory-child" not in out
