"""Checkpoints: everything a run needs to continue bit for bit, written atomically, read safely.

A checkpoint (log_dir/ckpt_<step>.pt) is a dict of tensors and plain containers, no pickled objects:
  step            optimizer steps taken
  model           the model's state_dict (padding rows of the embedding included)
  optimizer       the optimizer's state_dict (AdamW, or Muon);  scaler: fp16's GradScaler state, or None
  loader          the train loader's stream position
  rng             every process's random generators (python, numpy, torch, cuda, mps), by rank
  config          TrainConfig as a dict;  model_config: GPTConfig as a dict
  tokenizer_identity  e.g. "tiktoken:gpt2" or "bpe:sha256:<hex>"
  tokenizer_text  a bpe.py tokenizer's model file, whole, so the checkpoint works without it
"""
import dataclasses
import glob
import os
import pickle
import random
import re
import shutil

import numpy as np
import torch
import torch.distributed as dist

import bpe
import files
import run_log
from errors import UserError, one_line

# Settings of one invocation rather than of the run (where it runs, where its files are, when it
# stops): a resumed run takes them from the command line, never from its checkpoint.
NOT_INHERITED = ("resume", "overwrite", "stop_step", "device", "log_dir")
LOCK = "run.lock"  # holds the pid of the run that owns the log dir
# What a run writes into its log dir, so what --overwrite replaces and a crash may leave temp files of.
RUN_FILES = r"ckpt_\d+\.pt|metrics\.jsonl|log\.txt|model\.safetensors|config\.json"
REQUIRED_KEYS = ("step", "model", "optimizer", "loader", "rng", "config", "model_config")


def claim_log_dir(log_dir, resume, overwrite):
    """Make log_dir this run's, before anything is written there. Returns (the open lock file, to
    keep for the run's life, and a line saying what --overwrite replaced, or None).

    A lock refuses a second run on the same log dir: checkpoints and metrics.jsonl would interleave.
    The OS drops it when the process ends, however it ends (even kill -9), so it never goes stale.
    A fresh run may not replace another run's checkpoints, unless --overwrite says so."""
    try:
        os.makedirs(log_dir, exist_ok=True)
        lock = files.hold_lock(log_dir, LOCK, f"--log_dir={log_dir} is in use by another run (pid {{pid}});"
                                              " wait for it to end, or pass another --log_dir")
    except OSError as e:  # a file of that name, no permission, ...
        raise UserError(f"--log_dir={log_dir}: cannot write there ({e.strerror or one_line(e)})") from None
    files.remove_temp_files(log_dir, RUN_FILES)  # half-written files of a run that was killed
    files.remove_temp_files(os.path.join(log_dir, "hf"), RUN_FILES)
    previous = sorted(glob.glob(os.path.join(log_dir, "ckpt_[0-9]*.pt")))
    if not previous or resume:
        return lock, None
    if not overwrite:
        lock.close()
        raise UserError(f"--log_dir={log_dir} holds another run ({len(previous)} checkpoints, the latest"
                        f" {os.path.basename(previous[-1])}): continue it with --resume, replace it with"
                        " --overwrite, or pass another --log_dir")
    replaced = previous + [os.path.join(log_dir, name) for name in ("metrics.jsonl", "log.txt", "hf")
                           if os.path.exists(os.path.join(log_dir, name))]
    for path in replaced:
        if os.path.isdir(path):
            shutil.rmtree(path)
        else:
            os.remove(path)
    return lock, "--overwrite: removed the previous run's " + ", ".join(os.path.basename(p) for p in replaced)


def rng_state():
    """This process's random generators as tensors, lists and numbers (no pickled objects)."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {"python": [version, list(internal), gauss],
            "numpy": [np_name, np_keys.tolist(), int(np_pos), int(np_has_gauss), float(np_gauss)],
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
            "mps": torch.mps.get_rng_state() if _has_mps() else None}


def _has_mps():
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def set_rng_state(state):
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    if state.get("mps") is not None and _has_mps():  # checkpoints before MPS support have none
        torch.mps.set_rng_state(state["mps"])


def checkpoint_path(log_dir, step):
    return os.path.join(log_dir, f"ckpt_{step:06d}.pt")


def _step_of(path):
    return int(re.findall(r"\d+", os.path.basename(path))[0])


def latest_checkpoint(log_dir):
    paths = glob.glob(os.path.join(log_dir, "ckpt_[0-9]*.pt"))
    return max(paths, key=_step_of) if paths else None


def save_checkpoint(path, obj):
    # torch.save into a temp file, fsync, rename: a crash mid-write leaves the previous checkpoints intact.
    try:
        with files.atomic_write(path) as f:
            torch.save(obj, f)
    except OSError as e:  # e.g. a full disk: the temp file is gone, earlier checkpoints are intact
        raise UserError(f"{path}: cannot write it ({e.strerror or one_line(e)}); the earlier"
                        " checkpoints are intact") from None


def load_tensors(path, what="checkpoint"):
    """torch.load with weights_only=True: tensors and plain containers only. Unpickling anything
    else can run arbitrary code, so a file holding such an object is refused (one line)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: {what} not found") from None
    except pickle.UnpicklingError as e:
        found = re.search(r"unsupported global:?(?: GLOBAL)? ([\w.]+)", str(e), re.IGNORECASE)  # torch's wordings
        if found:
            raise UserError(f"{path}: refused, it holds a pickled Python object ({found.group(1)}) that"
                            " weights_only loading forbids; only tensors and plain containers are allowed") from None
        raise UserError(f"{path}: not a readable {what} (weights_only unpickler failed)") from None
    except Exception as e:  # a truncated or foreign file
        raise UserError(f"{path}: not a readable {what} ({type(e).__name__}: {one_line(e, 200)})") from None


def load_checkpoint(path):
    """A checkpoint dict, loaded by load_tensors (no code is ever unpickled). `path` may also be a
    log dir: its latest checkpoint is loaded."""
    if os.path.isdir(path):
        found = latest_checkpoint(path)
        if found is None:
            raise UserError(f"{path}: no ckpt_*.pt checkpoint in this directory")
        path = found
    ckpt = load_tensors(path)
    if not isinstance(ckpt, dict):
        raise UserError(f"{path}: not a train_gpt2.py checkpoint (it holds a {type(ckpt).__name__})")
    ckpt.setdefault("path", path)
    return ckpt


def load_latest(log_dir):
    """The newest checkpoint in log_dir (what --resume continues from)."""
    path = latest_checkpoint(log_dir)
    if path is None:
        raise UserError(f"--resume: no ckpt_*.pt checkpoint in {log_dir}")
    return load_checkpoint(path)


def require_keys(ckpt, keys=REQUIRED_KEYS):
    """A one-line error unless the checkpoint is a dict holding `keys` (a foreign .pt file is not)."""
    missing = [k for k in keys if k not in ckpt]
    if missing:
        raise UserError(f"{ckpt['path']}: not a train_gpt2.py checkpoint (no {', '.join(missing)})")
    for key in ("config", "model_config"):
        if key in keys and not isinstance(ckpt[key], dict):
            raise UserError(f"{ckpt['path']}: not a train_gpt2.py checkpoint ({key} is not a dict)")


def resumed_config(tc, ckpt, overrides, say):
    """The checkpoint's settings with the flags given now on top (except NOT_INHERITED, which
    always come from the command line). Says which settings the checkpoint kept that differ from
    this file's defaults, and which flags override the checkpoint."""
    require_keys(ckpt)
    known = {f.name for f in dataclasses.fields(tc)} - set(NOT_INHERITED)
    saved = {k: v for k, v in ckpt["config"].items() if k in known}
    merged = dataclasses.replace(type(tc)(**saved), **overrides)
    defaults = type(tc)()
    kept = [f"{k}={v!r}" for k, v in saved.items() if k not in overrides and getattr(defaults, k) != v]
    changed = [f"{k}={v!r} (was {saved[k]!r})" for k, v in overrides.items() if k in saved and saved[k] != v]
    say(f"resuming from {ckpt['path']} at step {ckpt['step']}")
    say("  settings from the checkpoint that differ from this file's defaults: " + (", ".join(kept) or "none"))
    say("  flags overriding the checkpoint: " + (", ".join(changed) or "none"))
    return merged


def save(log_dir, *, step, model, optimizer, scaler, loader, config, tokenizer, run):
    """Gather every rank's random generators, then rank 0 writes log_dir/ckpt_<step>.pt; its path."""
    path = checkpoint_path(log_dir, step)
    states = [None] * run.world_size
    if run.ddp:
        dist.all_gather_object(states, rng_state())
    else:
        states = [rng_state()]
    if run.master:
        save_checkpoint(path, {
            "step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "loader": loader.state_dict(), "rng": states, "config": dataclasses.asdict(config),
            "model_config": dataclasses.asdict(model.config), "tokenizer_identity": tokenizer.identity,
            "tokenizer_text": tokenizer.model_text})
    return path


BLOWUP = 1.1  # a loss 10% above the best so far is no longer training noise: it is diverging


def diverged(step, what, log_dir):
    """The error that stops a run whose loss or gradient went non-finite. It names the latest
    checkpoint saved before the loss started to blow up (metrics.jsonl has every step's loss): a
    checkpoint written while the loss was already climbing would diverge again at once."""
    losses = {s: r["loss"] for s, r in run_log.read_metrics(log_dir).get("train", {}).items()} \
        if os.path.exists(os.path.join(log_dir, "metrics.jsonl")) else {}
    saved = sorted(glob.glob(os.path.join(log_dir, "ckpt_[0-9]*.pt")), key=_step_of, reverse=True)
    rising = []
    for path in saved:  # ckpt_<s> holds the weights that gave step s's loss
        if _step_of(path) < step:  # (those of the failing step, or later ones, would fail again)
            before = [losses[s] for s in sorted(losses) if s <= _step_of(path)]
            if not before or before[-1] <= BLOWUP * min(before):
                break
        rising.append(os.path.basename(path))
    else:
        path = None
    advice = (f"Last good checkpoint: {path}" if path else "No checkpoint is trustworthy") + (
        f" ({', '.join(rising)} saved while the loss was already rising: delete them before --resume)"
        if rising else "")
    return UserError(f"step {step}: {what}; stopping without saving. {advice} (lower --max_lr,"
                     " or check the data)")


def tokenizer_of(ckpt):
    """The tokenizer a checkpoint was trained with: from the model file text it carries, so it
    loads anywhere, even after the file is gone (older checkpoints: from the path they recorded)."""
    spec = ckpt["config"].get("tokenizer", "gpt2")
    return bpe.load_tokenizer(spec, model_text=ckpt.get("tokenizer_text"))


def check_tokenizer(ckpt, tokenizer):
    """A resumed run must keep its vocabulary (no checkpoint: nothing to check)."""
    if ckpt is not None and ckpt.get("tokenizer_identity", tokenizer.identity) != tokenizer.identity:
        raise UserError(f"--resume: the checkpoint was trained with tokenizer {ckpt['tokenizer_identity']},"
                        f" but --tokenizer={tokenizer.spec} is {tokenizer.identity}")


def restore(ckpt, *, model, optimizer, scaler, loader, run):
    """Put the run back exactly where the checkpoint left it; returns the step to continue from."""
    require_keys(ckpt)
    ours = dataclasses.asdict(model.config)
    defaults = dataclasses.asdict(type(model.config)())  # options added since: their defaults
    if {**defaults, **ckpt["model_config"]} != ours:
        raise UserError(f"--resume: checkpoint model {ckpt['model_config']} differs from {ours}")
    try:  # a file with the right keys can still hold the wrong things
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        loader.load_state_dict(ckpt["loader"])
        states = ckpt["rng"]
        set_rng_state(states[run.rank] if len(states) == run.world_size else states[0])
        return int(ckpt["step"])
    except (AttributeError, KeyError, IndexError, TypeError, ValueError, RuntimeError) as e:
        raise UserError(f"{ckpt['path']}: not a usable checkpoint ({type(e).__name__}: {one_line(e, 200)})") from None
