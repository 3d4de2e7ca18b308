"""Your first GPT, end to end, offline, on a laptop CPU, in a few minutes:

    python first_run.py              # corpus -> tokenizer -> shards -> training -> eval, plot, samples
    python first_run.py              # again: reuses the tokenizer and shards, retrains the model
    python first_run.py --help       # flags (output folder, vocab size, steps, ...)

The stages, each done by the repo's real code:
  1. corpus     fineweb.py's embedded "pydocs" source: Python's own documentation text (the
                pydoc topics plus every stdlib docstring, ~2.5 MB), read from this Python's
                installation, so nothing is downloaded. Documents go to val by a hash of their
                text (fineweb.split_by_hash), so val is text the model never trains on.
  2. tokenizer  bpe.py learns a byte-level BPE vocabulary from the *train* documents.
  3. shards     fineweb.build_shards writes the token shards + manifest.json train_gpt2 reads.
  4. training   train_gpt2.main() with the "laptop" model preset and overrides sized for a CPU:
                the same loop, schedule, evaluation and checkpoints as the 124M run on 8 GPUs.
  5. results    the final val loss in nats/token and bits/byte, a loss-curve PNG from
                train_gpt2's metrics.jsonl, and samples from the saved checkpoint.

Stages 1-3 are skipped when their output is already in --out, built with the same settings: the
file names hold the Python version, corpus size, vocab size and val fraction, and the shards'
manifest must record the same source, split and tokenizer file. Stage 4 always starts afresh,
replacing --out/log.
"""
import argparse
import contextlib
import io
import itertools
import math
import os
import shutil
import sys
import time

import torch

import bpe
import checkpoints
import fineweb
import plot
import run_log
import shard_format
import train_gpt2 as tg
from errors import fail

# How the first run trains. The model shape is train_gpt2's "laptop" preset; these are the
# other settings, sized so the whole command takes <= 5 minutes on 2 CPU cores (measured figures
# in the README). Tiny models on little data take a much higher learning rate than GPT-3 Small's
# 6e-4, and a short warmup; batches are small so the model gets many updates.
DEFAULT_VOCAB = 2048       # ~3 bytes/token on pydocs; the softmax over 2K ids stays cheap
DEFAULT_STEPS = 1200       # optimizer steps: ~3 epochs of the train split
VAL_FRACTION = 0.05        # ~5% of the documents (~120 KB) held out for val
# train_gpt2's loader reads a split as a stream and shuffles the order of its *shards* each
# epoch. pydocs comes sorted by module name, so one big shard would feed the model one topic
# after another; ~100 small shards, reshuffled every epoch, mix the topics.
SHARD_TOKENS = 8192
TRAIN_OVERRIDES = {
    "micro_batch_size": 16,
    "seq_len": 128,
    "total_batch_size": 16 * 128,   # one micro step per optimizer step
    "max_lr": 3e-3,
    "min_lr_ratio": 0.1,
    "warmup_steps": 30,
    "weight_decay": 0.1,
    "val_tokens": 32768,            # tokens per val estimate (the whole val split when smaller)
    "device": "cpu",                # a GPU would work too, but this run is about the laptop
    "compile": "false",             # compiled, this run took 1.2-1.3x the CPU time (README, Benchmarks)
    "hellaswag": False,             # HellaSwag needs a download and a bigger model to mean anything
    "num_samples": 2,
    "sample_tokens": 48,
}
EVALS_PER_RUN = 10                  # val-loss points on the curve
SAMPLE_PROMPTS = ["The list type", "Return a new", "This module provides"]
SAMPLE_TOKENS = 64


# ------------------------------------------------------------------------------------------------
# Stages 1-3: corpus, tokenizer, shards (skipped when already built)
# ------------------------------------------------------------------------------------------------

def documents(max_docs):
    """The pydocs documents, read lazily (the first max_docs of them when given: for quick tests)."""
    return itertools.islice(fineweb.pydocs_documents(), max_docs or None)


def corpus(max_docs):
    return list(documents(max_docs))


def data_tag(source_name, vocab, max_docs, val_fraction):
    """The name shared by a tokenizer file and its shard folder. It holds every setting that
    decides their contents (the corpus, which Python it came from, the split, the vocabulary), so
    a run with other settings builds a new pair beside the old one instead of reusing it."""
    docs = f"-{max_docs}docs" if max_docs else ""
    return f"{source_name.replace(':', '-')}{docs}-vocab{vocab}-val{val_fraction!r}"


def prepare_data(out, vocab, max_docs, val_fraction, say=print):
    """Build (or reuse) tokenizer + shards in `out`. Returns (tokenizer path, shard dir)."""
    pydocs = fineweb.open_source(fineweb.PYDOCS).name   # names this Python's version: its docs differ
    source = pydocs + (f" (first {max_docs} documents)" if max_docs else "")
    split_rule = shard_format.split_rule_by_hash(val_fraction)   # what fineweb records for split_by_hash
    tag = data_tag(pydocs, vocab, max_docs, val_fraction)
    tok_path = os.path.join(out, f"tokenizer-{tag}.model")
    shard_dir = os.path.join(out, f"shards-{tag}")

    def build_shards(labeled):
        return fineweb.build_shards(shard_dir, labeled, tok_path, source, split_rule=split_rule,
                                    shard_tokens=SHARD_TOKENS, workers=0, progress=False)

    if os.path.exists(tok_path):
        # fineweb refuses a folder built from another source, split or tokenizer file, returns a
        # finished one untouched (without reading the documents) and finishes an interrupted one.
        try:
            build_shards(fineweb.split_by_hash(documents(max_docs), val_fraction))
            say(f"[1-3/5] reusing tokenizer {tok_path} and shards {shard_dir} (delete them to rebuild)")
            return tok_path, shard_dir
        except ValueError as e:
            say(f"[1-3/5] rebuilding tokenizer and shards: {e}")
    # Otherwise both are built afresh, old shards first: a tokenizer kept from one build with
    # shards from another is what makes train_gpt2 refuse the data.
    if os.path.isdir(shard_dir):
        shutil.rmtree(shard_dir)
    t0 = time.perf_counter()
    docs = corpus(max_docs)
    labeled = list(fineweb.split_by_hash(docs, val_fraction))
    train_docs = [text for split, text in labeled if split == "train"]
    say(f"[1/5] corpus: {source}: {len(docs)} documents, {sum(len(d.encode()) for d in docs) / 1e6:.2f} MB"
        f" ({len(docs) - len(train_docs)} for val) in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    tok = bpe.Tokenizer().train(train_docs, vocab, special_tokens=[bpe.EOT])
    tok.save(tok_path)
    say(f"[2/5] tokenizer: bpe.py learned {tok.vocab_size} tokens from the train documents in"
        f" {time.perf_counter() - t0:.1f} s -> {tok_path}")
    t0 = time.perf_counter()
    manifest = build_shards(iter(labeled))
    for split in shard_format.SPLITS:
        say(f"[3/5] shards: {fineweb.split_summary(manifest, split)}")
    say(f"[3/5] shards written to {shard_dir} in {time.perf_counter() - t0:.1f} s")
    return tok_path, shard_dir


# ------------------------------------------------------------------------------------------------
# Stage 4: training with train_gpt2.main()
# ------------------------------------------------------------------------------------------------

class QuietSteps(io.TextIOBase):
    """A stdout filter for the training log: passes every line except the per-step training
    lines, of which it keeps one in `every` (the full log is in log_dir/log.txt anyway)."""

    def __init__(self, stream, every):
        self.stream, self.every, self.partial = stream, max(every, 1), ""

    def write(self, text):
        lines = (self.partial + text).split("\n")
        self.partial = lines.pop()
        for line in lines:
            step = run_log.TRAIN_LINE.match(line)
            if not step or int(step.group(1)) % self.every == 0:
                self.stream.write(line + "\n")
        return len(text)

    def flush(self):
        self.stream.flush()


# train_gpt2 settings that first_run.py sets from its own flags, and the flag to use instead:
# --train can't change them without breaking what the other stages built or read.
BUILT_FROM = "it is built from --vocab, --max_docs and --val_fraction"
FIXED_SETTINGS = {"model": "use --model", "max_steps": "use --steps", "log_dir": "use --out (the log is OUT/log)",
                  "tokenizer": BUILT_FROM, "data_dir": BUILT_FROM}


def train_args(tok_path, shard_dir, log_dir, model, steps, overrides):
    """train_gpt2's argv. The intervals are defaults that --train may change (train_gpt2 always
    evaluates, samples and checkpoints at the last step, which is all stage 5 reads)."""
    intervals = {"eval_interval": max(steps // EVALS_PER_RUN, 1), "sample_interval": steps, "checkpoint_interval": steps}
    settings = {**TRAIN_OVERRIDES, **intervals, **overrides, "model": model, "tokenizer": tok_path,
                "data_dir": shard_dir, "log_dir": log_dir, "max_steps": steps}
    return [f"--{k}={v}" for k, v in settings.items()]


# ------------------------------------------------------------------------------------------------
# Stage 5: results: final val loss, the loss curve, samples
# ------------------------------------------------------------------------------------------------

def samples(log_dir, prompts, max_new_tokens, seed=1337):
    """Continuations of each prompt by the final checkpoint (loaded the way users load it)."""
    model, tok = tg.GPT.from_checkpoint(log_dir)
    generator = torch.Generator().manual_seed(seed)
    out = []
    for prompt in prompts:
        ids = tg.generate(model, tok.encode(prompt), 1, max_new_tokens, generator=generator)[0]
        out.append(tok.decode(ids))
    return out


# ------------------------------------------------------------------------------------------------
# The command
# ------------------------------------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(description="Offline end-to-end first run: pydocs corpus -> bpe.py tokenizer ->"
                                " shards -> train_gpt2 'laptop' model -> val loss, loss-curve PNG, samples.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="runs/first_run", help="output folder (tokenizer, shards, log/ with checkpoint, loss.png)")
    p.add_argument("--vocab", type=int, default=DEFAULT_VOCAB, help="BPE vocabulary size, <|endoftext|> included")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="optimizer steps")
    p.add_argument("--model", default="laptop", help=f"train_gpt2 model preset ({', '.join(tg.MODEL_PRESETS)})")
    p.add_argument("--max_docs", type=int, default=0, help="use only the first N corpus documents (0: all); for quick tests")
    p.add_argument("--val_fraction", type=float, default=VAL_FRACTION, help="share of documents held out for val (by hash)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default, one per core)")
    p.add_argument("--log_every", type=int, default=50, help="print every Nth training step (all are in log/log.txt)")
    p.add_argument("--train", nargs="*", default=[], metavar="NAME=VALUE",
                   help="extra train_gpt2 settings, e.g. --train max_lr=1e-3 micro_batch_size=8 (see python train_gpt2.py"
                   f" --help); not {', '.join(FIXED_SETTINGS)}, which first_run.py sets")
    args = p.parse_args(argv)
    if args.vocab < 257:
        p.error(f"--vocab {args.vocab}: needs at least 257 (256 bytes + <|endoftext|>)")
    if args.steps < 1:
        p.error(f"--steps {args.steps}: must be positive")
    if not 0.0 < args.val_fraction < 1.0:
        p.error(f"--val_fraction {args.val_fraction}: must be between 0 and 1")
    if args.model not in tg.MODEL_PRESETS:
        p.error(f"--model {args.model}: expected one of {', '.join(tg.MODEL_PRESETS)}")
    if args.max_docs < 0:
        p.error(f"--max_docs {args.max_docs}: must be 0 (all documents) or positive")
    if args.threads < 0:
        p.error(f"--threads {args.threads}: must be 0 (torch's default) or positive")
    taken = {name: f"first_run.py sets {name} itself; {why}" for name, why in FIXED_SETTINGS.items()}
    return args, train_overrides(p, args.train, taken)


def train_overrides(parser, items, taken):
    """--train NAME=VALUE ... -> {NAME: VALUE}; a malformed item, or a NAME in `taken` (NAME: why
    it may not be given), is a parser error."""
    overrides = {}
    for item in items:
        name, eq, value = item.partition("=")
        if not eq:
            parser.error(f"--train {item}: expected NAME=VALUE")
        if name in taken:
            parser.error(f"--train {item}: {taken[name]}")
        overrides[name] = value
    return overrides


def main(argv=None):
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    start = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        os.makedirs(args.out, exist_ok=True)
        tok_path, shard_dir = prepare_data(args.out, args.vocab, args.max_docs, args.val_fraction)
    except (ValueError, OSError) as e:
        raise fail("first_run.py", e) from None

    log_dir = os.path.join(args.out, "log")
    if os.path.isdir(log_dir):  # a fresh training run each time: old metrics would mix into the plot
        shutil.rmtree(log_dir)
    print(f"[4/5] training: train_gpt2.py --model={args.model}, {args.steps} steps, log in {log_dir}", flush=True)
    t0 = time.perf_counter()
    argv = train_args(tok_path, shard_dir, log_dir, args.model, args.steps, overrides)
    with contextlib.redirect_stdout(QuietSteps(sys.stdout, args.log_every)):
        tg.main(argv)  # exits with a one-line message on bad settings
    train_s = time.perf_counter() - t0

    final = list(run_log.read_metrics(log_dir)["val"].values())[-1]
    final_step, val_loss, bpb = final["step"], final["loss"], final["bits_per_byte"]
    png = os.path.join(args.out, "loss.png")
    plot.plot_run(log_dir, png, f"first_run.py: {args.model} on pydocs, vocab {args.vocab}")
    ckpt = checkpoints.latest_checkpoint(log_dir)
    print(f"[5/5] results after {final_step} steps ({train_s:.0f} s of training):")
    print(f"      val loss {val_loss:.4f} nats/token = {bpb:.4f} bits/byte"
          f" (a uniform guess over {args.vocab} tokens: {math.log(args.vocab):.4f} nats/token)")
    print(f"      checkpoint {ckpt}")
    print(f"      loss curve {png}")
    for i, text in enumerate(samples(log_dir, SAMPLE_PROMPTS, SAMPLE_TOKENS)):
        print(f"      sample {i}: {text!r}")
    print(f"done in {time.perf_counter() - start:.0f} s (load average {os.getloadavg()[0]:.2f});"
          f" run it again to retrain with the same tokenizer and shards")
    return 0


if __name__ == "__main__":
    sys.exit(main())
