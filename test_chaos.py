"""Chaos tests: real processes killed at random moments, run side by side, and fed bad input.

Each test reproduces one way a run or a build used to be lost or silently corrupted (the
numbered points of issue 12) and asserts what happens now. Trainers and builds run as real
processes (python train_gpt2.py / fineweb.py), killed with SIGKILL, which no handler sees.
The bad-input table at the end runs each script's main() in-process: any exception other
than the one-line SystemExit of errors.fail escapes as a traceback and fails the test.
"""
import glob
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import regex
import torch

import checkpoints
import files
import hellaswag
import run_log
import shard_format
import train_gpt2 as tg
from test_train_gpt2 import HERE, cli, corpus, records_of, tiny_run, write_hellaswag  # noqa: F401 (corpus: a fixture)

TEMP_FILES = "." + "*" + files.TEMP_SUFFIX  # what atomic_write leaves behind when killed mid-write


def start_trainer(corpus, log_dir, *extra):
    """A real trainer process (one thread, so several fit on two cores)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, os.path.join(HERE, "train_gpt2.py"),
                             *tiny_run(corpus, f"--log_dir={log_dir}", *extra)],
                            cwd=HERE, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for(condition, process, timeout=120.0, poll=0.002):
    """Poll until condition() holds; fail if the process ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"exited {process.returncode} first: {process.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("timed out")
        time.sleep(poll)


def kill(process):
    process.send_signal(signal.SIGKILL)
    process.wait()


def trained_steps(log_dir):
    path = os.path.join(log_dir, "metrics.jsonl")
    return len(records_of(log_dir, "train")) if os.path.exists(path) else 0


def assert_checkpoints_load(log_dir):
    paths = glob.glob(os.path.join(log_dir, "ckpt_[0-9]*.pt"))
    assert paths
    for path in paths:
        ckpt = checkpoints.load_checkpoint(path)
        checkpoints.require_keys(ckpt)
        assert all(torch.isfinite(t).all() for t in ckpt["model"].values()), path


def assert_one_line_error(result, script):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{script}: error: "), result.stderr


# ------------------------------------------------------------------------------------------------
# 1, 2, 10: a log dir belongs to one run; kill -9 at random, also mid-checkpoint
# ------------------------------------------------------------------------------------------------

def test_second_trainer_refused_then_random_kills_lose_nothing(corpus, tmp_path):
    log_dir = str(tmp_path / "log")
    # checkpoints at every step: a random kill often lands inside a checkpoint write
    run = ["--max_steps=100000", "--checkpoint_interval=1", "--eval_interval=100000"]
    first = start_trainer(corpus, log_dir, *run)
    wait_for(lambda: trained_steps(log_dir) >= 3, first)
    # 1. a second trainer on the same log dir is refused while the first runs, and writes nothing
    second = cli(*tiny_run(corpus, f"--log_dir={log_dir}", "--max_steps=5"), check=False)
    assert_one_line_error(second, "train_gpt2.py")
    assert f"is in use by another run (pid {first.pid})" in second.stderr
    # 10. kill -9 at random moments; each restart resumes from an intact checkpoint
    rng = random.Random(0)
    left_behind = set()
    for attempt in range(4):
        time.sleep(rng.uniform(0.05, 0.6))
        kill(first)
        assert_checkpoints_load(log_dir)
        killed_writes = set(glob.glob(os.path.join(log_dir, TEMP_FILES)))
        left_behind |= killed_writes
        if attempt == 0:  # before any resume, one writer: every step once, in order
            assert [r["step"] for r in records_of(log_dir, "train")] == list(range(trained_steps(log_dir)))
        rows = trained_steps(log_dir)
        first = start_trainer(corpus, log_dir, "--resume", *run)
        wait_for(lambda: trained_steps(log_dir) > rows + 2, first)  # the resumed run is training
        assert not killed_writes & set(glob.glob(os.path.join(log_dir, TEMP_FILES)))  # removed at start
    kill(first)
    assert_checkpoints_load(log_dir)
    assert left_behind  # at least one kill did land inside a checkpoint write
    # 2. a fresh run (no --resume) into the used log dir is refused, and its checkpoints stay
    before = {p: os.path.getmtime(p) for p in glob.glob(os.path.join(log_dir, "ckpt_*.pt"))}
    fresh = cli(*tiny_run(corpus, f"--log_dir={log_dir}", "--max_steps=5"), check=False)
    assert_one_line_error(fresh, "train_gpt2.py")
    assert "holds another run" in fresh.stderr and "--resume" in fresh.stderr and "--overwrite" in fresh.stderr
    assert {p: os.path.getmtime(p) for p in glob.glob(os.path.join(log_dir, "ckpt_*.pt"))} == before


# ------------------------------------------------------------------------------------------------
# 3, 4: fineweb.py builds: one per --out, and a resume only over the same input
# ------------------------------------------------------------------------------------------------

def write_corpus(path, n_docs, seed=0):
    """A jsonl corpus big enough that a build with small shards takes a few seconds."""
    rng = random.Random(seed)
    words = "the cat dog bird sees likes a red green big small river tree house ball".split()
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n_docs):
            f.write(json.dumps({"text": " ".join(rng.choice(words) for _ in range(rng.randint(50, 400)))}) + "\n")
    return str(path)


def start_build(source, out, *extra):
    return subprocess.Popen([sys.executable, "fineweb.py", "--source", source, "--out", out, "--shard-tokens",
                             "2000", "--workers", "1", "--quiet", *extra],
                            cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def shard_files(out):
    names = os.listdir(out) if os.path.isdir(out) else []
    return sorted(p for p in names if re.fullmatch(shard_format.SHARD_NAME_PATTERN, p))


def test_second_build_into_the_same_out_is_refused_and_the_first_stays_consistent(tmp_path):
    source, out = write_corpus(tmp_path / "c.jsonl", 3000), str(tmp_path / "out")
    first = start_build(source, out, "--val-fraction", "0.1")
    wait_for(lambda: len(shard_files(out)) >= 2, first)
    second = start_build(source, out, "--val-fraction", "0.3")
    _, err = second.communicate(timeout=120)
    assert second.returncode != 0 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("fineweb.py: error: ") and f"in use by another build (pid {first.pid})" in err
    assert first.wait(timeout=300) == 0, first.stderr.read()
    manifest = json.load(open(os.path.join(out, shard_format.MANIFEST)))
    listed = [s for split in manifest["splits"].values() for s in split["shards"]]
    assert sorted(s["file"] for s in listed) == shard_files(out)  # every shard listed, none extra
    for s in listed:
        assert files.file_sha256(os.path.join(out, s["file"])) == s["sha256"], s["file"]


def test_a_killed_build_refuses_to_resume_over_a_changed_input(tmp_path):
    source, out = write_corpus(tmp_path / "c.jsonl", 3000), str(tmp_path / "out")
    build = start_build(source, out)
    wait_for(lambda: len(shard_files(out)) >= 2, build)
    kill(build)
    assert not os.path.exists(os.path.join(out, shard_format.MANIFEST)), "finished before it was killed"
    before = {name: files.file_sha256(os.path.join(out, name)) for name in shard_files(out)}
    write_corpus(source, 3000, seed=1)  # other documents, same file name
    rerun = start_build(source, out)
    _, err = rerun.communicate(timeout=120)
    assert rerun.returncode != 0 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("fineweb.py: error: ") and "c.jsonl" in err
    assert {name: files.file_sha256(os.path.join(out, name)) for name in shard_files(out)} == before
    assert not os.path.exists(os.path.join(out, shard_format.MANIFEST))


# ------------------------------------------------------------------------------------------------
# 5, 6: a resumed run redoes the evaluation and export a kill cut off
# ------------------------------------------------------------------------------------------------

# A val loss over many tokens takes a while, so the kill lands between the checkpoint and it.
SLOW_EVAL = ["--val_tokens=32768", "--sample_interval=4", "--num_samples=1"]


def kill_when_saved(corpus, log_dir, step, *extra):
    """Start a run and SIGKILL it as soon as ckpt_<step>.pt exists (rename: it is complete)."""
    trainer = start_trainer(corpus, log_dir, *SLOW_EVAL, *extra)
    wait_for(lambda: os.path.exists(checkpoints.checkpoint_path(log_dir, step)), trainer)
    kill(trainer)


@pytest.mark.parametrize("final", [True, False], ids=["after-the-final-checkpoint", "mid-run"])
def test_killed_between_checkpoint_and_evaluation(corpus, tmp_path, final):
    for attempt in range(3):  # a kill that came too late (the evaluation already written) is retried
        log_dir = str(tmp_path / f"log{attempt}")
        kill_when_saved(corpus, log_dir, 4, "--max_steps=4" if final else "--max_steps=8",
                        "--eval_interval=2", "--checkpoint_interval=2")
        if 4 not in run_log.logged_steps(log_dir, "val"):
            break
    else:
        pytest.fail("the kill never landed between checkpoint 4 and its evaluation")
    assert not os.path.exists(os.path.join(log_dir, "hf"))
    cli(f"--log_dir={log_dir}", "--resume", "--device=cpu")
    assert 4 in run_log.logged_steps(log_dir, "val")
    assert 4 in run_log.logged_steps(log_dir, "sample")
    assert os.path.exists(os.path.join(log_dir, "hf", "model.safetensors"))
    assert [r["step"] for r in records_of(log_dir, "train")] == list(range(4 if final else 8))


# ------------------------------------------------------------------------------------------------
# 9: divergence names a checkpoint that is safe to resume
# ------------------------------------------------------------------------------------------------

def test_divergence_names_a_checkpoint_that_resumes(corpus, tmp_path):
    log_dir = str(tmp_path / "log")
    common = ["--max_steps=40", "--checkpoint_interval=1", "--eval_interval=1000"]
    cli(*tiny_run(corpus, f"--log_dir={log_dir}", "--stop_step=10", *common))
    # the same run resumed with a learning rate 1000x too high and no clipping: the loss climbs
    # for a step or two (their checkpoints saved), then goes non-finite
    blown = cli(f"--log_dir={log_dir}", "--resume", "--device=cpu", "--max_lr=1000", "--grad_clip=0",
                "--stop_step=-1", check=False)
    assert_one_line_error(blown, "train_gpt2.py")
    message = blown.stderr.strip()
    named = message.split("Last good checkpoint: ")[1].split(" ")[0]
    assert named == checkpoints.checkpoint_path(log_dir, 10)  # the last one before the climb
    assert "saved while the loss was already rising: delete them before --resume" in message
    ckpt = checkpoints.load_checkpoint(named)
    assert all(t.abs().max() < 10 for t in ckpt["model"].values())  # sane weights, not 1e3
    # following the advice (delete the later ones, resume at a sane rate) trains on
    for rising in message.split("(")[1].split(" saved while")[0].split(", "):
        os.remove(os.path.join(log_dir, rising))
    cli(f"--log_dir={log_dir}", "--resume", "--device=cpu", "--max_lr=3e-3", "--grad_clip=1")
    losses = {r["step"]: r["loss"] for r in records_of(log_dir, "train")}  # later rows win
    assert sorted(losses) == list(range(40)) and all(math.isfinite(v) and v < 6 for v in losses.values())


# ------------------------------------------------------------------------------------------------
# 8: HellaSwag with a tokenizer that is not the model's
# ------------------------------------------------------------------------------------------------

def test_hellaswag_refuses_a_tokenizer_that_does_not_fit(corpus, tmp_path):
    log_dir = str(tmp_path / "log")
    cli(*tiny_run(corpus, f"--log_dir={log_dir}", "--max_steps=1"))
    data = write_hellaswag(tmp_path / "hs.jsonl", 4)
    result = subprocess.run([sys.executable, "hellaswag.py", "--checkpoint", log_dir, "--data", data,
                             "--tokenizer", "gpt2"], cwd=HERE, capture_output=True, text=True)
    assert_one_line_error(result, "hellaswag.py")
    assert "50257" in result.stderr  # names the two vocabulary sizes that do not fit


# ------------------------------------------------------------------------------------------------
# 7, 14: tokenizers: a damaged model file, and the two engines on every letter and number
# ------------------------------------------------------------------------------------------------

def test_a_cut_short_tokenizer_file_is_refused(corpus, tmp_path):
    text = open(corpus.tokenizer_path, encoding="utf-8").read()
    lines = text.splitlines(keepends=True)
    rng = random.Random(0)
    for cut in [len("".join(lines[:-1])), len("".join(lines[:-2])) + 5] + rng.sample(range(40, len(text) - 1), 3):
        damaged = tmp_path / f"cut{cut}.model"
        damaged.write_text(text[:cut], encoding="utf-8")
        with pytest.raises(SystemExit) as e:
            tg.main(tiny_run(corpus, f"--tokenizer={damaged}", f"--log_dir={tmp_path / 'log'}", "--max_steps=1"))
        message = str(e.value)
        assert message.startswith("train_gpt2.py: error: ") and "\n" not in message, message
        assert str(damaged) in message and "cut short" in message, message
    assert not glob.glob(str(tmp_path / "log" / "ckpt_*"))


def test_python_encoder_and_its_tiktoken_export_agree_on_every_letter_and_number():
    """bpe.py trains and encodes with the `regex` package, fineweb.py encodes with its tiktoken
    export. On every code point `regex` calls a letter or a number (its Unicode may be newer than
    tiktoken's, so this holds every one the two might disagree on), next to ASCII letters and
    digits, a tokenizer trained on that very text must give the same ids in both engines. (Were a
    new letter a letter to one engine only, the trainer would learn merges across it that the
    export, splitting there, could never apply.)"""
    every = tg.bpe.every_code_point()
    text = "".join(f" a{c}1{c}" for c in regex.findall(r"[\p{L}\p{N}]", every))
    assert len(text) > 5 * 140_000
    tok = tg.bpe.Tokenizer("gpt2").train([text], 256 + 200)
    assert tok.encode_ordinary(text) == tok.to_tiktoken().encode_ordinary(text)


# ------------------------------------------------------------------------------------------------
# 11, 12: every bad input is one line naming the file or flag: no traceback, a non-zero exit
# ------------------------------------------------------------------------------------------------

class Pickled:
    """A pickle that would run a command if unpickled without weights_only."""

    def __reduce__(self):
        return (os.system, ("touch pwned",))


def _manifest_edit(edit):
    def setup(corpus, trained, tmp_path):
        data = str(tmp_path / "data")
        shutil.copytree(corpus.data_dir, data)
        path = os.path.join(data, "manifest.json")
        manifest = json.load(open(path))
        with open(path, "w") as f:  # json.dump writes NaN as the bare NaN that json.load reads
            json.dump(edit(manifest), f)
        return tg.main, tiny_run(corpus, f"--data_dir={data}", f"--log_dir={tmp_path / 'log'}", "--max_steps=1")
    return setup


def _manifest_file(write):
    def setup(corpus, trained, tmp_path):
        data = str(tmp_path / "data")
        shutil.copytree(corpus.data_dir, data)
        os.remove(os.path.join(data, "manifest.json"))
        write(os.path.join(data, "manifest.json"))
        return tg.main, tiny_run(corpus, f"--data_dir={data}", f"--log_dir={tmp_path / 'log'}", "--max_steps=1")
    return setup


def _val_split(key, value):
    def edit(manifest):
        manifest["splits"]["val"][key] = value
        return manifest
    return edit


def _tokenizer_field(key, value):
    def edit(manifest):
        manifest["tokenizer"][key] = value
        return manifest
    return edit


def _first_shard_tokens(value):
    def edit(manifest):
        manifest["splits"]["train"]["shards"][0]["tokens"] = value
        return manifest
    return edit


def _damaged(ckpt, case):
    """A loadable checkpoint dict made wrong in one way."""
    ckpt = dict(ckpt)
    if case == "no model":
        del ckpt["model"]
    elif case == "model is a list":
        ckpt["model"] = [1, 2]
    elif case == "a weight missing":
        ckpt["model"] = {k: v for k, v in ckpt["model"].items() if "c_fc" not in k}
    elif case == "a weight of another shape":
        ckpt["model"] = {k: (v[:1] if "c_fc.weight" in k else v) for k, v in ckpt["model"].items()}
    elif case == "optimizer is a string":
        ckpt["optimizer"] = "adam"
    elif case == "loader without position":
        ckpt["loader"] = {}
    elif case == "rng is empty":
        ckpt["rng"] = []
    elif case == "rng of another shape":
        ckpt["rng"] = [{"python": [3]}]
    elif case == "step is text":
        ckpt["step"] = "four"
    elif case == "config is a list":
        ckpt["config"] = ["tiny"]
    elif case == "not a dict":
        ckpt = [ckpt]
    return ckpt


def _damaged_checkpoint(case):
    def setup(corpus, trained, tmp_path):
        log_dir = tmp_path / "log"
        shutil.copytree(trained, log_dir)
        path = log_dir / "ckpt_000002.pt"
        if case == "code in a pickle":
            torch.save({**torch.load(path, weights_only=True), "extra": Pickled()}, path)
        else:
            torch.save(_damaged(torch.load(path, weights_only=True), case), path)
        return tg.main, ["--resume", f"--log_dir={log_dir}", "--device=cpu"]
    return setup


def _trainer(*extra):
    def setup(corpus, trained, tmp_path):
        (tmp_path / "afile").write_text("x")
        (tmp_path / "adir").mkdir()
        return tg.main, tiny_run(corpus, f"--log_dir={tmp_path / 'log'}", "--max_steps=1",
                                 *(e.format(tmp=tmp_path) for e in extra))
    return setup


def _hellaswag(*extra, ending_words=3):
    def setup(corpus, trained, tmp_path):
        data = tmp_path / "hs.jsonl"
        with open(data, "w") as f:
            f.write(json.dumps({"ind": 0, "ctx": "the cat sees", "label": 0,
                                "endings": [" the ball" * ending_words] * 4}) + "\n")
        if "--model" in extra:  # weights that would run code if unpickled
            hf = tmp_path / "hf"
            hf.mkdir()
            (hf / "config.json").write_text(json.dumps({"n_layer": 1, "n_head": 1, "n_embd": 4, "n_positions": 8,
                                                        "vocab_size": 16}))
            torch.save({"weights": Pickled()}, hf / "pytorch_model.bin")
        return hellaswag.main, ["--data", str(data), *(e.format(tmp=tmp_path, log=trained) for e in extra)]
    return setup


def _full_disk(monkeypatch):
    def full(obj, f):
        f.write(b"PK partial")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(checkpoints.torch, "save", full)


def _ctrl_c(monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(tg, "train_step", interrupt)


DAMAGE = ["no model", "model is a list", "a weight missing", "a weight of another shape", "optimizer is a string",
          "loader without position", "rng is empty", "rng of another shape", "step is text", "config is a list",
          "not a dict", "code in a pickle"]

# id -> (setup, what the message must name, a monkeypatch to apply first or None)
BAD_INPUTS = {
    # 11: manifests
    "manifest valid JSON, not a dict": (_manifest_file(lambda p: open(p, "w").write("[1, 2]")), "manifest.json", None),
    "manifest random bytes": (_manifest_file(lambda p: open(p, "wb").write(bytes(range(256)))), "manifest.json", None),
    "manifest a directory": (_manifest_file(os.mkdir), "manifest.json", None),
    "manifest bytes_per_token text": (_manifest_edit(_val_split("bytes_per_token", "abc")), "manifest.json", None),
    # 12: inconsistent manifests
    "manifest vocab_size wrong": (_manifest_edit(_tokenizer_field("vocab_size", 999)), "manifest.json", None),
    "manifest token count 50000.7": (_manifest_edit(_first_shard_tokens(50000.7)), "manifest.json", None),
    "manifest bytes_per_token negative": (_manifest_edit(_val_split("bytes_per_token", -4.5)), "manifest.json", None),
    "manifest bytes_per_token NaN": (_manifest_edit(_val_split("bytes_per_token", math.nan)), "manifest.json", None),
    # 11: checkpoints that load but are wrong, and one holding code
    **{f"checkpoint: {case}": (_damaged_checkpoint(case), "ckpt_000002.pt", None) for case in DAMAGE},
    # 11: places and settings
    "--log_dir a file": (_trainer("--log_dir={tmp}/afile"), "--log_dir=", None),
    "--log_dir under a file": (_trainer("--log_dir={tmp}/afile/log"), "--log_dir=", None),
    "--hellaswag_path a directory": (_trainer("--hellaswag=true", "--hellaswag_path={tmp}/adir"), "adir", None),
    "--max_lr=3e38": (_trainer("--max_lr=3e38"), "--max_lr=3e+38: must be a positive number <= 10000", None),
    "full disk at a checkpoint": (_trainer(), "ckpt_000001.pt", _full_disk),
    # 11: hellaswag.py
    "hellaswag ending longer than the context": (_hellaswag("--checkpoint={log}", "--device=cpu", ending_words=40),
                                                 "does not fit the model's context", None),
    "hellaswag --device cuda": (_hellaswag("--checkpoint={log}", "--device=cuda"), "--device=cuda", None),
    "hellaswag --device bogus": (_hellaswag("--checkpoint={log}", "--device=bogus"), "--device=bogus", None),
    "hellaswag tokenizer not the model's": (_hellaswag("--checkpoint={log}", "--tokenizer=gpt2", "--device=cpu"),
                                            "--tokenizer=gpt2", None),
    "hellaswag malicious pytorch_model.bin": (_hellaswag("--model", "{tmp}/hf", "--device=cpu"), "pytorch_model.bin: refused",
                                              None),
}


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    """A log dir with ckpt_000002.pt of a tiny run (block_size 64)."""
    log_dir = str(tmp_path_factory.mktemp("trained") / "log")
    tg.main(tiny_run(corpus, f"--log_dir={log_dir}", "--max_steps=4", "--stop_step=2"))
    return log_dir


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_line(corpus, trained, tmp_path, monkeypatch, case):
    setup, names, patch = BAD_INPUTS[case]
    main, argv = setup(corpus, trained, tmp_path)
    if patch:
        patch(monkeypatch)
    monkeypatch.chdir(tmp_path)  # where a pickle's command would leave its file
    with pytest.raises(SystemExit) as e:
        main(argv)
    message = str(e.value)
    script = os.path.basename(main.__globals__["__file__"])
    assert message.startswith(f"{script}: error: ") and "\n" not in message, message
    assert names in message, message
    assert not os.path.exists("pwned")


def test_ctrl_c_is_one_line_and_keeps_the_checkpoints(corpus, trained, tmp_path, monkeypatch):
    log_dir = tmp_path / "log"
    shutil.copytree(trained, log_dir)
    before = (log_dir / "ckpt_000002.pt").read_bytes()
    _ctrl_c(monkeypatch)
    with pytest.raises(SystemExit, match="^train_gpt2.py: interrupted; continue with --resume$"):
        tg.main(["--resume", f"--log_dir={log_dir}", "--device=cpu"])
    assert (log_dir / "ckpt_000002.pt").read_bytes() == before
