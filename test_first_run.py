"""first_run.py end to end at a small size: a 30-document slice of the pydocs corpus, a 400-token
vocabulary, train_gpt2's "tiny" model for 30 steps. Two real runs of the command (a fresh
process each, as a newcomer would type it): the first builds everything, the second must reuse
the tokenizer and shards and retrain. Every claim the README makes about the output is checked.
Then, in process and in seconds: flag errors, and when stages 1-3 may reuse a tokenizer + shards."""
import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import bpe
import checkpoints
import fineweb
import first_run as fr
import shard_format
import train_gpt2 as tg

HERE = os.path.dirname(os.path.abspath(__file__))
VOCAB, STEPS, DOCS, EVAL_EVERY = 400, 30, 30, 5
SMALL = ["--vocab", str(VOCAB), "--steps", str(STEPS), "--max_docs", str(DOCS), "--model", "tiny",
         "--val_fraction", "0.25", "--threads", "1", "--log_every", "10",
         # 8 x 32 tokens a step; val estimated on 4K tokens, every EVAL_EVERY steps (a --train value
         # first_run.py's own default, STEPS // 10, must not override).
         "--train", "micro_batch_size=8", "seq_len=32", "total_batch_size=256", "val_tokens=4096",
         f"eval_interval={EVAL_EVERY}"]


def first_run(*args):
    result = subprocess.run([sys.executable, os.path.join(HERE, "first_run.py"), *args],
                            capture_output=True, text=True, timeout=300, cwd=HERE)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result.stdout


def reported_val(out):
    found = re.search(r"val loss ([\d.]+|nan|inf) nats/token = ([\d.]+|nan|inf) bits/byte", out)
    assert found, out[-2000:]
    return float(found.group(1)), float(found.group(2))


def file_state(folder):
    return {name: os.stat(os.path.join(folder, name)).st_mtime_ns for name in sorted(os.listdir(folder))}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("first_run"))
    first = first_run("--out", out, *SMALL)
    built = {name: os.stat(os.path.join(out, name)).st_mtime_ns for name in os.listdir(out) if name.endswith(".model")}
    shard_dir = next(os.path.join(out, n) for n in os.listdir(out) if n.startswith("shards-"))
    shards_before = file_state(shard_dir)
    first_ckpt = os.stat(checkpoints.latest_checkpoint(os.path.join(out, "log"))).st_mtime_ns
    second = first_run("--out", out, *SMALL)
    return {"out": out, "first": first, "second": second, "built": built, "shard_dir": shard_dir,
            "shards_before": shards_before, "first_ckpt": first_ckpt}


def test_stdout_keeps_one_step_line_in_log_every(runs):
    steps = [int(m) for m in re.findall(r"^step +(\d+)/30 \| loss ", runs["first"], re.M)]
    assert steps == [0, 10, 20]  # --log_every 10; log.txt keeps them all
    logged = open(os.path.join(runs["out"], "log", "log.txt")).read()
    assert len(re.findall(r"^step +\d+/30 \| loss .* elapsed, ETA \d+:\d\d:\d\d$", logged, re.M)) == 30


def test_first_run_builds_a_usable_tokenizer_and_shards(runs):
    out = runs["out"]
    assert "[2/5] tokenizer: bpe.py learned" in runs["first"]
    models = [n for n in os.listdir(out) if n.endswith(".model")]
    assert len(models) == 1
    tok = bpe.load_tokenizer(os.path.join(out, models[0]))
    assert tok.vocab_size == VOCAB
    text = "Return a new list."
    assert tok.decode(tok.encode_ordinary(text)) == text
    with open(os.path.join(runs["shard_dir"], "manifest.json")) as f:
        manifest = json.load(f)
    assert manifest["tokenizer"]["identity"] == tok.identity
    assert manifest["source"].startswith("pydocs:python-") and f"first {DOCS} documents" in manifest["source"]
    for split in ("train", "val"):
        s = manifest["splits"][split]
        assert s["documents"] > 0 and s["tokens"] > 0
        assert s["bytes_per_token"] > 1.0  # BPE packs more than a byte into a token
        tokens = np.concatenate([np.load(os.path.join(runs["shard_dir"], sh["file"])) for sh in s["shards"]])
        assert len(tokens) == s["tokens"] and tokens.max() < VOCAB
        assert (tokens == tok.eot_id).sum() == s["documents"]  # one <|endoftext|> per document
    assert manifest["splits"]["train"]["documents"] + manifest["splits"]["val"]["documents"] == DOCS


def test_first_run_trains_reports_and_saves(runs):
    out, stdout = runs["out"], runs["first"]
    nats, bpb = reported_val(stdout)
    assert math.isfinite(nats) and nats < math.log(VOCAB)  # learned something beyond a uniform guess
    with open(os.path.join(runs["shard_dir"], "manifest.json")) as f:
        val_bpt = json.load(f)["splits"]["val"]["bytes_per_token"]
    assert bpb == pytest.approx(nats / math.log(2) / val_bpt, abs=2e-4)
    # The figure printed is the final val record of train_gpt2's metrics.
    train, val = [], []
    for line in open(os.path.join(out, "log", "metrics.jsonl")):
        r = json.loads(line)
        (train if r["kind"] == "train" else val if r["kind"] == "val" else []).append(r)
    assert [r["step"] for r in train] == list(range(STEPS))
    assert [r["step"] for r in val] == list(range(0, STEPS + 1, EVAL_EVERY))  # --train eval_interval was used
    assert val[-1]["step"] == STEPS and val[-1]["loss"] == pytest.approx(nats, abs=1e-4)
    # The checkpoint loads as a model of the tokenizer's vocabulary.
    model, tok = tg.GPT.from_checkpoint(os.path.join(out, "log"))
    assert model.config.vocab_size == tok.vocab_size == VOCAB and os.path.exists(tok.spec)
    # Samples from the checkpoint, one per prompt, each starting with its prompt.
    samples = re.findall(r"^\s+sample (\d): '(.*)'$", stdout, re.M)
    assert [i for i, _ in samples] == ["0", "1", "2"]
    assert samples[0][1].startswith("The list type") and len(samples[0][1]) > len("The list type")


def test_first_run_writes_a_loss_curve_png(runs):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    path = os.path.join(runs["out"], "loss.png")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    image = plt.imread(path)
    assert image.shape[0] >= 300 and image.shape[1] >= 400
    assert image[..., :3].std() > 0.05  # not a blank canvas: axes, curves and labels were drawn


def test_second_run_reuses_tokenizer_and_shards_and_retrains(runs):
    out, second = runs["out"], runs["second"]
    assert "reusing tokenizer" in second and "[2/5] tokenizer: bpe.py learned" not in second
    after = {name: os.stat(os.path.join(out, name)).st_mtime_ns for name in runs["built"]}
    assert runs["built"] and after == runs["built"]              # tokenizer file untouched
    assert file_state(runs["shard_dir"]) == runs["shards_before"]  # shards untouched
    assert os.stat(checkpoints.latest_checkpoint(os.path.join(out, "log"))).st_mtime_ns != runs["first_ckpt"]
    steps = [json.loads(line)["step"] for line in open(os.path.join(out, "log", "metrics.jsonl"))
             if json.loads(line)["kind"] == "train"]
    assert steps == list(range(STEPS))  # a fresh log: the plot never mixes two runs
    # Same seed, same data, same settings: the retrained model lands on the same val loss.
    assert reported_val(second) == pytest.approx(reported_val(runs["first"]), abs=1e-3)


def test_help_and_bad_flags():
    assert "--out" in first_run("--help")
    bad = subprocess.run([sys.executable, os.path.join(HERE, "first_run.py"), "--vocab", "100"],
                         capture_output=True, text=True, timeout=120, cwd=HERE)
    assert bad.returncode != 0 and "--vocab 100" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize("argv, message", [
    (["--threads", "-1"], "--threads -1: must be 0"),        # was torch.set_num_threads's traceback
    (["--max_docs", "-5"], "--max_docs -5: must be 0"),      # was islice's message, no flag named
    # Settings first_run.py sets itself were silently replaced by its own values.
    (["--train", "max_steps=5"], "--train max_steps=5: first_run.py sets max_steps itself; use --steps"),
    (["--train", "max_lr=1e-3", "model=d12"], "--train model=d12: first_run.py sets model itself; use --model"),
    (["--train", "log_dir=/tmp/x"], "sets log_dir itself; use --out"),
    (["--train", "tokenizer=gpt2"], "sets tokenizer itself; it is built from --vocab"),
    (["--train", "data_dir=/tmp/x"], "sets data_dir itself; it is built from --vocab"),
])
def test_bad_flags_are_one_line_errors_naming_the_flag(argv, message, capsys):
    with pytest.raises(SystemExit) as stopped:
        fr.parse_args(argv)
    assert stopped.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert ": error: " in error and message in error


def test_train_settings_override_first_runs_defaults_but_not_its_fixed_ones():
    args, overrides = fr.parse_args(["--steps", "100", "--train", "eval_interval=7", "max_lr=1e-3"])
    argv = fr.train_args("tok.model", "shards", "log", args.model, args.steps, overrides)
    settings = dict(a[2:].split("=", 1) for a in argv)
    assert len(settings) == len(argv)   # each setting given once
    assert settings["eval_interval"] == "7" and settings["max_lr"] == "1e-3" and settings["max_steps"] == "100"
    assert settings["sample_interval"] == settings["checkpoint_interval"] == "100"   # the defaults remain


# ------------------------------------------------------------------------------------------------
# Reusing tokenizer + shards only when they match this run (stages 1-3, in process: seconds)

def prepare(out, val_fraction):
    said = []
    tok_path, shard_dir = fr.prepare_data(str(out), VOCAB, DOCS, val_fraction, say=said.append)
    return tok_path, shard_dir, "\n".join(said)


def assert_consistent(tok_path, shard_dir, val_fraction):
    """The pair is what a run with this val_fraction must train on: train_gpt2 accepts the shards
    with this tokenizer, and they hold this split of the documents."""
    manifest = shard_format.read_manifest(shard_dir, bpe.load_tokenizer(tok_path))   # raises on another tokenizer
    assert manifest["split_rule"] == f"blake2b-hash:{val_fraction!r}"
    labels = [split for split, _ in fineweb.split_by_hash(fr.corpus(DOCS), val_fraction)]
    assert manifest["splits"]["val"]["documents"] == labels.count("val")
    assert manifest["splits"]["train"]["documents"] == labels.count("train")


def test_another_val_fraction_builds_its_own_tokenizer_and_shards(tmp_path):
    tok_a, shards_a, said = prepare(tmp_path, 0.25)
    assert "[2/5] tokenizer: bpe.py learned" in said
    tok_b, shards_b, said = prepare(tmp_path, 0.5)
    assert "reusing" not in said and "[2/5] tokenizer: bpe.py learned" in said  # was: reused the 0.25 split
    assert (tok_b, shards_b) != (tok_a, shards_a)
    assert_consistent(tok_b, shards_b, 0.5)
    # The first pair is still there, untouched, for a run with 0.25 again.
    before = file_state(shards_a)
    tok, shards, said = prepare(tmp_path, 0.25)
    assert "reusing" in said and (tok, shards) == (tok_a, shards_a) and file_state(shards_a) == before
    assert_consistent(tok_a, shards_a, 0.25)


def test_deleted_tokenizer_then_another_val_fraction_ends_consistent(tmp_path):
    # The reported sequence: it left a 0.5-split tokenizer beside 0.25-split shards, then "reused" them.
    tok, shards, _ = prepare(tmp_path, 0.25)
    os.remove(tok)
    for val_fraction in (0.5, 0.25, 0.25):
        tok, shards, said = prepare(tmp_path, val_fraction)
        assert_consistent(tok, shards, val_fraction)
    assert "reusing" in said


def replace_tokenizer(tok_path, shard_dir):
    """bpe.py changed since the shards were made: the file holds another tokenizer."""
    bpe.Tokenizer().train(["another text, another vocabulary " * 20], VOCAB, special_tokens=[bpe.EOT]).save(tok_path)


def test_a_pair_that_does_not_match_is_rebuilt_not_reused(tmp_path):
    tok, shards, _ = prepare(tmp_path, 0.25)
    replace_tokenizer(tok, shards)   # bpe.py changed since the shards were made
    tok2, shards2, said = prepare(tmp_path, 0.25)
    assert (tok2, shards2) == (tok, shards)
    assert "reusing" not in said and "rebuilding tokenizer and shards: " in said and "tokenizer" in said
    assert_consistent(tok, shards, 0.25)


def test_an_interrupted_build_is_finished_and_a_lost_tokenizer_rebuilt(tmp_path):
    tok, shards, _ = prepare(tmp_path, 0.25)
    def contents():
        return {name: open(os.path.join(shards, name), "rb").read() for name in sorted(os.listdir(shards))}

    reference = contents()
    os.remove(os.path.join(shards, "manifest.json"))   # interrupted before its last write
    assert "reusing" in prepare(tmp_path, 0.25)[2] and contents() == reference   # finished, same bytes
    os.remove(tok)
    assert "[2/5] tokenizer: bpe.py learned" in prepare(tmp_path, 0.25)[2]
    assert_consistent(tok, shards, 0.25)


def test_another_python_builds_its_own_tokenizer_and_shards(tmp_path, monkeypatch):
    tok_a, shards_a, _ = prepare(tmp_path, 0.25)
    monkeypatch.setattr(sys, "version", "3.99.0 (an upgrade, with other docs)")
    tok_b, shards_b, said = prepare(tmp_path, 0.25)
    assert "reusing" not in said and tok_b != tok_a and "python-3.99.0" in tok_b
    with open(os.path.join(shards_b, "manifest.json")) as f:
        assert json.load(f)["source"].startswith("pydocs:python-3.99.0")
    assert_consistent(tok_b, shards_b, 0.25)
