"""Benchmark: fineweb.py against build-nanogpt's fineweb.py, end to end, each as its own program.

    python -m bench.fineweb_speed                        # 30 MB and 150 MB jsonl, 4 rounds each
    python -m bench.fineweb_speed --mb 30 --rounds 2     # one size

Both sides turn the same local jsonl file into uint16 GPT-2 token shards, each document as
[eot] + encode_ordinary(text), and each is a whole program started with `subprocess`, timed from
start to exit, so start-up (imports, loading the tokenizer, starting worker processes) counts on
both sides:
  - plain: PLAIN_SCRIPT below, build-nanogpt's fineweb.py as written there, changed only to take
    the corpus, the output folder, the shard size and the worker count from its command line
    (the original streams FineWeb-Edu from the Hub and shows a tqdm bar, left out here because
    fineweb.py runs with --quiet): the corpus loaded whole with datasets.load_dataset("json",
    split="train"), a multiprocessing Pool's imap over its rows, chunksize 16, a uint16 array
    back per document, shards filled from those arrays, the first one val, np.save.
  - fineweb.py: `python fineweb.py --source CORPUS --quiet ...`, its default 1% hash val split.
`datasets` keeps an Arrow copy of a corpus it has loaded, and a second run of the plain script
on the same file reads that copy instead of the jsonl. Each plain run gets a fresh, empty cache
(HF_DATASETS_CACHE), as on the one run a corpus is normally prepared with; --plain-cache warm
fills one cache first, untimed, and lets every plain run reuse it.

How it is measured: the runs alternate, plain first in odd rounds and fineweb.py first in even
ones (ABBA), so slow drift of the machine's load falls on both sides alike; both sides run on
the same CPUs (--cpus, by default the ones this process may use), with the same number of
workers; the load average is printed before every run. CPU-seconds are user + system time of
the whole process tree (resource.getrusage(RUSAGE_CHILDREN) before and after: the pool workers,
reaped by their parent, are included); tokens per CPU-second is a cost that other load on the
machine moves much less than wall time. Each round's ratio compares its two adjacent runs; the
summary gives the median over rounds.

The corpus (built once per size, kept): the standard library's .py files (code) plus the
`pydocs` corpus (prose) repeated, cut into documents of lognormal length (median ~3 KB, like web
pages) at different places on each repetition, shuffled with a fixed seed, written as jsonl.
"""
import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

import bpe
import files
import fineweb
import shard_format
from bench import REPO_ROOT

BENCH_SHARD_TOKENS = 10_000_000   # several shard writes on both sides (build-nanogpt's 100M: one shard at 150 MB)
SIDES = ("plain", "fineweb.py")

# build-nanogpt's fineweb.py (github.com/karpathy/build-nanogpt), line for line but for the
# marked changes. The pool is started without an `if __name__ == "__main__"` guard, as there:
# it relies on Linux's default "fork" start method, which Python uses up to 3.13.
PLAIN_SCRIPT = '''
import os
import sys  # changed: the corpus, the output folder and the sizes come from the command line
import multiprocessing as mp
import numpy as np
import tiktoken
from datasets import load_dataset  # pip install datasets

corpus, DATA_CACHE_DIR, shard_size = sys.argv[1], sys.argv[2], int(sys.argv[3])  # changed
os.makedirs(DATA_CACHE_DIR, exist_ok=True)

# changed: a local jsonl instead of load_dataset("HuggingFaceFW/fineweb-edu", name=remote_name, split="train")
fw = load_dataset("json", data_files=corpus, split="train")

# init the tokenizer
enc = tiktoken.get_encoding("gpt2")
eot = enc._special_tokens['<|endoftext|>'] # end of text token
def tokenize(doc):
    # tokenizes a single document and returns a numpy array of uint16 tokens
    tokens = [eot] # the special <|endoftext|> token delimits all documents
    tokens.extend(enc.encode_ordinary(doc["text"]))
    tokens_np = np.array(tokens)
    assert (0 <= tokens_np).all() and (tokens_np < 2**16).all(), "token dictionary too large for uint16"
    tokens_np_uint16 = tokens_np.astype(np.uint16)
    return tokens_np_uint16

def write_datafile(filename, tokens_np):
    np.save(filename, tokens_np)

# tokenize all documents and write output shards, each of shard_size tokens (last shard has remainder)
nprocs = int(sys.argv[4]) if len(sys.argv) > 4 else max(1, os.cpu_count()//2)  # changed: the benchmark's worker count
with mp.Pool(nprocs) as pool:
    shard_index = 0
    # preallocate buffer to hold current shard
    all_tokens_np = np.empty((shard_size,), dtype=np.uint16)
    token_count = 0
    for tokens in pool.imap(tokenize, fw, chunksize=16):

        # is there enough space in the current shard for the new tokens?
        if token_count + len(tokens) < shard_size:
            # simply append tokens to current shard
            all_tokens_np[token_count:token_count+len(tokens)] = tokens
            token_count += len(tokens)
        else:
            # write the current shard and start a new one
            split = "val" if shard_index == 0 else "train"
            filename = os.path.join(DATA_CACHE_DIR, f"edufineweb_{split}_{shard_index:06d}")
            # split the document into whatever fits in this shard; the remainder goes to next one
            remainder = shard_size - token_count
            all_tokens_np[token_count:token_count+remainder] = tokens[:remainder]
            write_datafile(filename, all_tokens_np)
            shard_index += 1
            # populate the next shard with the leftovers of the current doc
            all_tokens_np[0:len(tokens)-remainder] = tokens[remainder:]
            token_count = len(tokens)-remainder

    # write any remaining tokens as the last shard
    if token_count != 0:
        split = "val" if shard_index == 0 else "train"
        filename = os.path.join(DATA_CACHE_DIR, f"edufineweb_{split}_{shard_index:06d}")
        write_datafile(filename, all_tokens_np[:token_count])
'''


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


def corpus_path(corpus_dir, megabytes):
    return os.path.join(corpus_dir, f"corpus-{megabytes:g}mb.jsonl")


# ---- running each side as a program --------------------------------------------------------------

def plain_command(corpus, out_dir, shard_tokens, workers):
    return [sys.executable, "-c", PLAIN_SCRIPT, corpus, out_dir, str(shard_tokens), str(workers)]


def fineweb_command(corpus, out_dir, shard_tokens, workers):
    return [sys.executable, os.path.join(REPO_ROOT, "fineweb.py"), "--source", corpus, "--out", out_dir,
            "--shard-tokens", str(shard_tokens), "--workers", str(workers), "--quiet"]


def plain_tokens(out_dir):
    """Tokens the plain script wrote, in shard order (val first)."""
    names = sorted(os.listdir(out_dir), key=lambda n: int(n[-10:-4]))
    return [np.load(os.path.join(out_dir, n), mmap_mode="r") for n in names]


def fineweb_tokens(out_dir):
    manifest = files.read_json(os.path.join(out_dir, shard_format.MANIFEST))
    return sum(manifest["splits"][s]["tokens"] for s in shard_format.SPLITS)


def _children_cpu_seconds():
    """User + system time of the finished children of this process and all their descendants
    that were waited for (a pool's workers are joined by the pool's owner)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_side(side, corpus, shard_tokens, workers, hf_cache=None):
    """Run one side as a program in a fresh temp folder; returns (tokens, wall s, CPU s)."""
    work = tempfile.mkdtemp(prefix="fineweb-bench-")
    out = os.path.join(work, "out")
    env = dict(os.environ)
    if side == "plain":
        env["HF_DATASETS_CACHE"] = hf_cache or os.path.join(work, "hf-cache")   # fresh unless warm
        command = plain_command(corpus, out, shard_tokens, workers)
    else:
        command = fineweb_command(corpus, out, shard_tokens, workers)
    try:
        cpu, start = _children_cpu_seconds(), time.perf_counter()
        done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
        wall, cpu = time.perf_counter() - start, _children_cpu_seconds() - cpu
        if done.returncode != 0:
            sys.exit(f"{side} failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
        tokens = sum(len(t) for t in plain_tokens(out)) if side == "plain" else fineweb_tokens(out)
    finally:
        shutil.rmtree(work)
    return tokens, wall, cpu


def round_order(round_index):
    """ABBA: plain first in rounds 0, 2, ...; fineweb.py first in rounds 1, 3, ..."""
    return SIDES if round_index % 2 == 0 else SIDES[::-1]


def raw_single_process(corpus, megabytes=5):
    """tiktoken's own speed in this process, one core, no pipeline: the ceiling per core."""
    import tiktoken
    enc = tiktoken.get_encoding("gpt2")
    texts, size = [], 0
    with open(corpus) as f:
        for line in f:
            texts.append(json.loads(line)["text"])
            size += len(texts[-1])
            if size > megabytes * 1e6:
                break
    start = time.process_time()
    n = sum(len(enc.encode_ordinary(t)) for t in texts)
    return n / (time.process_time() - start)


def load_average():
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def bench_size(corpus, args):
    """All rounds on one corpus; returns the summary row."""
    mb = os.path.getsize(corpus) / 1e6
    print(f"\n## {corpus}: {mb:.1f} MB jsonl, {args.rounds} rounds (load average {load_average()})")
    hf_cache = None
    if args.plain_cache == "warm":
        hf_cache = tempfile.mkdtemp(prefix="fineweb-bench-hf-")
        run_side("plain", corpus, args.shard_tokens, args.workers, hf_cache)   # fills it, untimed
    runs = {side: [] for side in SIDES}
    try:
        for r in range(args.rounds):
            for side in round_order(r):
                load = os.getloadavg()[0]
                tokens, wall, cpu = run_side(side, corpus, args.shard_tokens, args.workers, hf_cache)
                runs[side].append((tokens, wall, cpu))
                print(f"  round {r + 1} {side:10s} {tokens:,} tokens in {wall:6.2f} s = {tokens / wall / 1e6:5.2f} "
                      f"M tokens/s; {cpu:6.2f} CPU-s = {tokens / cpu / 1e6:5.2f} M tokens/CPU-s; load {load:.2f}",
                      flush=True)
    finally:
        if hf_cache:
            shutil.rmtree(hf_cache)
    counts = {t for side in SIDES for t, _, _ in runs[side]}
    if len(counts) != 1:
        sys.exit(f"token counts differ between runs: {sorted(counts)}")
    tokens = counts.pop()
    wall_ratios = [p[1] / f[1] for p, f in zip(runs["plain"], runs["fineweb.py"])]
    cpu_ratios = [p[2] / f[2] for p, f in zip(runs["plain"], runs["fineweb.py"])]
    med = {side: (statistics.median(w for _, w, _ in runs[side]), statistics.median(c for _, _, c in runs[side]))
           for side in SIDES}
    print(f"  per round, plain time / fineweb.py time: wall {', '.join(f'{x:.2f}' for x in wall_ratios)}; "
          f"CPU {', '.join(f'{x:.2f}' for x in cpu_ratios)}")
    print(f"  load average after: {load_average()}")
    return {"mb": mb, "tokens": tokens, "med": med, "wall_ratio": statistics.median(wall_ratios),
            "cpu_ratio": statistics.median(cpu_ratios)}


def main():
    p = argparse.ArgumentParser(prog="python -m bench.fineweb_speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--mb", type=float, nargs="+", default=[30, 150], help="corpus sizes in MB (each built once)")
    p.add_argument("--corpus-dir", default=os.path.join(tempfile.gettempdir(), "fineweb-bench"),
                   help="where the corpora are kept, as corpus-<MB>mb.jsonl")
    p.add_argument("--rounds", type=int, default=4, help="ABBA rounds per size, one run of each side per round")
    p.add_argument("--cpus", default=None, help="CPUs both sides are pinned to, e.g. 0,1 (default: this process's)")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes, both sides alike (default: one per pinned CPU, fineweb.py's own default)")
    p.add_argument("--shard-tokens", type=int, default=BENCH_SHARD_TOKENS, help="tokens per shard, both sides")
    p.add_argument("--plain-cache", choices=("cold", "warm"), default="cold",
                   help="cold: each plain run starts with an empty `datasets` cache; warm: one filled beforehand")
    args = p.parse_args()
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    try:
        cpus = sorted({int(c) for c in args.cpus.split(",")}) if args.cpus else sorted(os.sched_getaffinity(0))
    except ValueError:
        p.error(f"--cpus takes CPU numbers separated by commas, e.g. 0,1 (got {args.cpus!r})")
    if not set(cpus) <= os.sched_getaffinity(0):
        p.error(f"--cpus {args.cpus}: this process may use only CPUs {','.join(map(str, sorted(os.sched_getaffinity(0))))}")
    os.sched_setaffinity(0, cpus)   # pinned: every process started from here inherits this CPU set
    args.workers = args.workers or len(cpus)
    bpe.offline_tiktoken_cache()   # GPT-2's vocabulary without a network, for both sides (inherited)
    os.makedirs(args.corpus_dir, exist_ok=True)
    print(f"python -m bench.fineweb_speed: {os.cpu_count()} CPUs, both sides pinned to {','.join(map(str, cpus))}, "
          f"{args.workers} workers each, shards of {args.shard_tokens:,} tokens, {args.plain_cache} `datasets` cache "
          f"for the plain script; load average {load_average()}")
    rows = []
    for mb in args.mb:
        corpus = corpus_path(args.corpus_dir, mb)
        make_corpus(corpus, mb)
        print(f"tiktoken encode_ordinary alone, 1 process: {raw_single_process(corpus) / 1e6:.2f} M tokens per CPU-second")
        rows.append(bench_size(corpus, args))
    print("\n| corpus | tokens | plain: wall s, CPU-s | fineweb.py: wall s, CPU-s | tokens/s ratio | tokens per CPU-s ratio |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        (pw, pc), (fw, fc) = row["med"]["plain"], row["med"]["fineweb.py"]
        print(f"| {row['mb']:.1f} MB | {row['tokens']:,} | {pw:.2f}, {pc:.2f} | {fw:.2f}, {fc:.2f} | "
              f"**{row['wall_ratio']:.2f}x** | {row['cpu_ratio']:.2f}x |")
    print(f"(medians of {args.rounds} rounds; ratios: fineweb.py's speed over the plain script's, the median of "
          f"the rounds' ratios; load average now {load_average()})")


if __name__ == "__main__":
    main()
