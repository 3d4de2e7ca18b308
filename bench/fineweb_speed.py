"""Benchmark: fineweb.py's tokenizing pipeline against the common nanoGPT-style script.

    python -m bench.fineweb_speed           # >= 50 MB local jsonl corpus, 2 worker processes

Both sides do the whole job on the same jsonl file, read through `datasets`' streaming json
loader: read documents, tokenize with GPT-2 as [eot] + tokens, cut into uint16 shards, np.save.
  - baseline: multiprocessing.Pool.imap over documents, encode_ordinary per document,
    chunksize 16, a numpy array back per document (as in the widely copied fineweb.py script).
  - fineweb.py: build_from_source (batches of ~1 MB of text per task, tiktoken straight into
    numpy, one array back per batch, atomic + checksummed shards, hash val split).
The runs alternate (baseline, ours, ours, baseline, ...) so a noisy neighbour hits both; the
load average is printed with each run, since the 2 CPUs may be shared. Each run also reports
CPU-seconds spent (main process + workers): tokens per CPU-second is a cost figure that other
load on the machine barely moves, unlike wall-clock tokens/s.

The corpus (built once, cached): the standard library's .py files (code) plus the `pydocs`
corpus (prose) repeated, cut into documents of lognormal length (median ~3 KB, like web pages)
at different places on each repetition, shuffled with a fixed seed, written as jsonl.
"""
import argparse
import json
import multiprocessing
import os
import random
import resource
import shutil
import sys
import tempfile
import time

import numpy as np

import bpe
import files
import fineweb
import shard_format

BENCH_SHARD_TOKENS = 10_000_000   # several shard writes on a ~50 MB corpus, on both sides


def make_corpus(path, megabytes, seed=0):
    """Write the benchmark corpus (see module docstring) unless a big enough one exists."""
    if os.path.exists(path) and os.path.getsize(path) >= megabytes * 1e6:
        return
    code = [open(p, encoding="utf-8", errors="replace").read() for _, p in fineweb.stdlib_modules()]
    prose = list(fineweb.pydocs_documents())
    rng = random.Random(seed)
    docs, size, rounds = [], 0, 0
    while size < megabytes * 1e6:
        texts = code if rounds == 0 else prose   # the code once, then the prose until big enough
        for text in texts:
            i = 0
            while i < len(text):
                n = max(200, int(rng.lognormvariate(8.0, 0.8)))   # e^8 ~ 3 KB median
                docs.append(text[i:i + n])
                size += len(docs[-1].encode("utf-8"))
                i += n
        rounds += 1
    rng.shuffle(docs)
    with files.atomic_write(path, "w") as f:
        for d in docs:
            f.write(json.dumps({"text": d}) + "\n")


# ---- the baseline: the nanoGPT-style script, run in this process --------------------------------

_enc = None


def _baseline_init():
    global _enc
    import tiktoken
    _enc = tiktoken.get_encoding("gpt2")


def _baseline_tokenize(doc):
    tokens = [_enc.eot_token]
    tokens.extend(_enc.encode_ordinary(doc["text"]))
    tokens = np.array(tokens)
    assert (0 <= tokens).all() and (tokens < 2**16).all()
    return tokens.astype(np.uint16)


def baseline(corpus, out_dir, workers, shard_tokens=BENCH_SHARD_TOKENS):
    """Returns total tokens written (first shard is val, the rest train, as in that script)."""
    import datasets
    datasets.disable_progress_bars()
    stream = datasets.load_dataset("json", data_files=corpus, split="train", streaming=True)
    buf = np.empty(shard_tokens, dtype=np.uint16)
    fill, shard, total = 0, 0, 0
    with multiprocessing.Pool(workers, initializer=_baseline_init) as pool:
        for tokens in pool.imap(_baseline_tokenize, stream, chunksize=16):
            total += len(tokens)
            while len(tokens):
                take = min(len(tokens), shard_tokens - fill)
                buf[fill:fill + take] = tokens[:take]
                fill += take
                tokens = tokens[take:]
                if fill == shard_tokens:
                    split = "val" if shard == 0 else "train"
                    np.save(os.path.join(out_dir, f"{split}_{shard:06d}.npy"), buf)
                    shard += 1
                    fill = 0
        if fill:
            np.save(os.path.join(out_dir, f"train_{shard:06d}.npy"), buf[:fill])
    return total


def ours(corpus, out_dir, workers, shard_tokens=BENCH_SHARD_TOKENS):
    m = fineweb.build_from_source(out_dir, corpus, shard_tokens=shard_tokens, workers=workers, progress=False)
    return sum(m["splits"][s]["tokens"] for s in shard_format.SPLITS)


def raw_single_process(corpus, megabytes=5):
    """tiktoken's own speed on one core (no IPC, no shards): context for the two figures."""
    import tiktoken
    enc = tiktoken.get_encoding("gpt2")
    texts, size = [], 0
    with open(corpus) as f:
        for line in f:
            texts.append(json.loads(line)["text"])
            size += len(texts[-1])
            if size > megabytes * 1e6:
                break
    t = time.perf_counter()
    n = sum(len(enc.encode_ordinary(t)) for t in texts)
    return n / (time.perf_counter() - t)


def _cpu_seconds():
    """User + system CPU time of this process and its finished children (the pool workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def main():
    p = argparse.ArgumentParser(prog="python -m bench.fineweb_speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", default=os.path.join(tempfile.gettempdir(), "fineweb-bench-corpus.jsonl"))
    p.add_argument("--mb", type=float, default=50, help="corpus size in MB (built if missing)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2, help="timed runs of each side, alternating")
    args = p.parse_args()
    bpe.offline_tiktoken_cache()  # GPT-2's vocabulary without a network
    import datasets  # imported before timing: its ~2 s import is not tokenizing
    make_corpus(args.corpus, args.mb)
    mb = os.path.getsize(args.corpus) / 1e6
    print(f"corpus {args.corpus}: {mb:.1f} MB jsonl; workers={args.workers}; CPUs visible={os.cpu_count()}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"tiktoken encode_ordinary, 1 process, no pipeline: {raw_single_process(args.corpus) / 1e6:.2f} M tokens/s")
    results = {"baseline": [], "fineweb.py": []}
    cpu_rates = {"baseline": [], "fineweb.py": []}
    totals = {}
    # Warm-up, untimed: the first load_dataset("json") imports and resolves its loader.
    next(iter(datasets.load_dataset("json", data_files=args.corpus, split="train", streaming=True)))
    sides = [("baseline", baseline), ("fineweb.py", ours)]
    for r in range(args.repeats):
        for name, fn in (sides if r % 2 == 0 else sides[::-1]):   # ABBA order: no side always first
            out = tempfile.mkdtemp(prefix="fineweb-bench-")
            try:
                cpu, t = _cpu_seconds(), time.perf_counter()
                tokens = fn(args.corpus, out, args.workers)
                dt, cpu = time.perf_counter() - t, _cpu_seconds() - cpu
            finally:
                shutil.rmtree(out)
            totals.setdefault(name, tokens)
            results[name].append(tokens / dt)
            cpu_rates[name].append(tokens / cpu)
            print(f"  {name:10s} {tokens:,} tokens in {dt:6.2f} s = {tokens / dt / 1e6:6.2f} M tokens/s; "
                  f"{cpu:5.2f} CPU-s = {tokens / cpu / 1e6:5.2f} M tokens/CPU-s; load {os.getloadavg()[0]:.2f}")
    print(f"load average after:  {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if totals["baseline"] != totals["fineweb.py"]:
        sys.exit(f"token counts differ: baseline {totals['baseline']:,} vs fineweb.py {totals['fineweb.py']:,}")
    for label, pick in (("best", max), ("median", lambda xs: float(np.median(xs)))):
        base, mine = pick(results["baseline"]), pick(results["fineweb.py"])
        print(f"{label} of {args.repeats}: baseline {base / 1e6:.2f} M tokens/s, fineweb.py {mine / 1e6:.2f} "
              f"M tokens/s, speedup {mine / base:.2f}x (same {totals['baseline']:,} tokens)")
    base, mine = float(np.median(cpu_rates["baseline"])), float(np.median(cpu_rates["fineweb.py"]))
    print(f"CPU cost (median, all processes): baseline {base / 1e6:.2f}, fineweb.py {mine / 1e6:.2f} M tokens "
          f"per CPU-second, {mine / base:.2f}x less CPU per token (robust to other load on the machine)")


if __name__ == "__main__":
    main()
