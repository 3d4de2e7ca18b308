"""bench/speedrun.py at a toy size: its schedule, its i.i.d. batches, and a short real run on a
small text (not tinyshakespeare, so the test needs no data file)."""
import json
import math

import pytest
import torch

from bench import speedrun as bs


def test_lr_warms_up_then_decays_to_the_floor_by_the_end_of_the_budget():
    r = bs.Recipe(max_lr=1e-2, warmup_steps=10, min_lr_ratio=0.1, schedule="linear")
    assert bs.lr_at(r, 0, 0.0) == pytest.approx(1e-3)       # step 1 of 10 of warmup
    assert bs.lr_at(r, 9, 0.0) == pytest.approx(1e-2)
    assert bs.lr_at(r, 50, 0.5) == pytest.approx(5.5e-3)    # halfway through the time budget
    assert bs.lr_at(r, 99, 1.0) == pytest.approx(1e-3)
    cos = bs.Recipe(max_lr=1e-2, warmup_steps=1, min_lr_ratio=0.0, schedule="cosine")
    assert bs.lr_at(cos, 5, 0.5) == pytest.approx(5e-3) and bs.lr_at(cos, 5, 1.0) == pytest.approx(0.0)


def test_each_budget_gets_its_recipe_and_flags_override_it():
    assert bs.recipe_for(10, {}) == bs.RECIPES[10]
    assert bs.recipe_for(120, {}) == bs.RECIPES[71]           # the largest key below
    assert bs.recipe_for(300, {"max_lr": 1e-3}).max_lr == 1e-3
    assert bs.recipe_for(300, {"max_lr": 1e-3}).n_layer == bs.RECIPES[300].n_layer


def test_random_windows_are_shifted_pairs_from_the_train_split(toy_text, tmp_path):
    tok_path, shard_dir, _, manifest = bs.prepare(toy_text, str(tmp_path), 300)
    import bpe
    import train_gpt2 as tg
    loader = tg.TokenShardLoader(shard_dir, "train", 4, 16, bpe.load_tokenizer(tok_path))
    windows = bs.RandomWindows(loader, seed=1)
    x, y = windows.next_batch()
    assert x.shape == y.shape == (4, 16) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])                   # y is x shifted by one token
    x2, _ = windows.next_batch()
    assert not torch.equal(x, x2)                             # a new random batch each step
    assert len(windows.tokens) == manifest["splits"]["train"]["tokens"]


@pytest.fixture
def keep_threads():
    threads = torch.get_num_threads()  # main() sets torch's (process-wide) thread count
    yield
    torch.set_num_threads(threads)


def test_a_short_run_prints_bits_per_byte_and_writes_json(toy_text, tmp_path, capsys, keep_threads):
    out = tmp_path / "runs.jsonl"
    bs.main(["--data", toy_text, "--work", str(tmp_path / "work"), "--steps", "12", "--json", str(out),
             "--vocab", "300", "--n_layer", "1", "--n_embd", "32", "--seq_len", "16", "--batch_size", "4",
             "--warmup_steps", "2", "--threads", "1"])
    printed = capsys.readouterr().out
    assert "bits/byte" in printed and "| 12 |" in printed
    record = json.loads(out.read_text().splitlines()[0])
    assert record["steps"] == 12 and record["tokens"] == 12 * 4 * 16
    assert math.isfinite(record["bits_per_byte"]) and record["nats_per_token"] < math.log(300)
    val_bpt = json.load(open(tmp_path / "work" / "shards-300" / "manifest.json"))["splits"]["val"]["bytes_per_token"]
    assert record["bits_per_byte"] == pytest.approx(record["nats_per_token"] / math.log(2) / val_bpt)


def test_missing_data_file_is_a_one_line_error(tmp_path):
    with pytest.raises(SystemExit, match="not found"):
        bs.main(["--data", str(tmp_path / "nope.txt"), "--work", str(tmp_path), "--budgets", "1"])


def test_the_modern_recipe_runs_with_muon(toy_text, tmp_path, capsys, keep_threads, monkeypatch):
    import train_gpt2 as tg
    built = []
    real = tg.configure_optimizer
    monkeypatch.setattr(tg, "configure_optimizer", lambda *a, **kw: built.append(real(*a, **kw)) or built[-1])
    out = tmp_path / "runs.jsonl"
    bs.main(["--data", toy_text, "--work", str(tmp_path / "work"), "--steps", "6", "--json", str(out),
             "--vocab", "300", "--n_layer", "1", "--n_embd", "32", "--seq_len", "16", "--batch_size", "4",
             "--warmup_steps", "2", "--threads", "1", "--recipe", "modern"])
    assert isinstance(built[0], tg.Muon) and any(g["muon"] for g in built[0].param_groups)
    record = json.loads(out.read_text().splitlines()[0])
    assert record["steps"] == 6 and math.isfinite(record["bits_per_byte"])
    with pytest.raises(SystemExit):
        bs.main(["--data", toy_text, "--work", str(tmp_path / "work"), "--steps", "1", "--recipe", "nope"])
