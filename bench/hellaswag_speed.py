"""Benchmark hellaswag_scoring.evaluate on the CPU: examples/s batched vs one example per forward pass.

    python -m bench.hellaswag_speed               # 128 synthetic examples, a small GPT
    python -m bench.hellaswag_speed --memory      # also the peak memory of each batch size
    python -m bench.hellaswag_speed --data hellaswag_val.jsonl --examples 1000

The examples are synthetic (HellaSwag-like lengths: ~20-110-word contexts, 4 endings of
~8-35 words) unless --data gives the real file. The model is a small GPT-2-shaped transformer
with GPT-2's 50257-token vocabulary (train_gpt2.GPT), randomly initialised:
speed does not depend on the weights. Both modes must give identical counts; the benchmark
checks that before printing figures. The modes take turns, the order reversed every other
round (ABBA), on the CPUs given by --cpus; CPU-seconds are printed beside wall time, and the
load average before and after. --memory runs each batch size once more in a fresh process and
prints its peak resident memory (a high-water mark per process, hence one process each): the
activations of a batch, and the (ending tokens x 50,257) logits, are what grows.
"""
import argparse
import os
import random
import subprocess
import sys
import time

import torch

import bpe
import hellaswag_scoring
import train_gpt2
from bench import REPO_ROOT

GPT2_VOCAB = 50257
WORDS = ("a man woman person is are then he she they the camera shows him her and into onto a "
         "large small pool of water ball dog kitchen knife tomato cuts slices paint brush wall "
         "fence roof tiles skis snow slope rope jumps runs walks talks to while holding up down "
         "you should make sure your hands clean before starting cooking step carefully slowly").split()


def synthetic_examples(n, seed=0):
    rng = random.Random(seed)

    def sentence(lo, hi):
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi))) + "."
    return [{"ind": i, "ctx": sentence(20, 110), "endings": [sentence(8, 35) for _ in range(4)],
             "label": rng.randrange(4)} for i in range(n)]


def make_model(n_layer, n_head, n_embd):
    torch.manual_seed(0)
    config = train_gpt2.GPTConfig(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=1024, vocab_size=GPT2_VOCAB)
    return train_gpt2.GPT(config).eval()


def load_gpt2_tokenizer():
    """GPT-2's vocabulary, offline too (bpe.offline_tiktoken_cache, as the tests do)."""
    bpe.offline_tiktoken_cache()
    return bpe.load_tokenizer("gpt2")


def time_modes(model, examples, tok, batch_sizes, repeats):
    """Best-of-`repeats` wall seconds and CPU seconds (this process, all threads) per batch size.
    The modes take turns, in reverse order every other round (ABBA), so that a burst of load
    from other processes, or a drift, does not fall on one mode only; CPU seconds are less
    sensitive to such load than wall time."""
    wall, cpu, counts = {b: float("inf") for b in batch_sizes}, {b: float("inf") for b in batch_sizes}, {}
    for r in range(repeats):
        for b in (batch_sizes if r % 2 == 0 else batch_sizes[::-1]):
            start, start_cpu = time.perf_counter(), time.process_time()
            counts[b] = hellaswag_scoring.evaluate(model, examples, tok, "cpu", batch_size=b)
            wall[b] = min(wall[b], time.perf_counter() - start)
            cpu[b] = min(cpu[b], time.process_time() - start_cpu)
    return wall, cpu, counts


MODEL_FLAGS = ("data", "examples", "n_layer", "n_head", "n_embd", "threads")   # what a memory child repeats


def peak_memory_mb(args, batch_size):
    """(MB resident before scoring, peak MB while scoring) of a fresh process that builds the same
    model and examples and scores them at batch_size."""
    flags = [f"--{name.replace('_', '-')}={getattr(args, name)}" for name in MODEL_FLAGS if getattr(args, name)]
    out = subprocess.run([sys.executable, "-m", "bench.hellaswag_speed", *flags, f"--memory-child={batch_size}"],
                         cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    before, after = map(float, out.split()[-2:])
    return before, after


def _status_mb(field):
    """VmRSS (now) or VmHWM (the peak) of this process in MB, from Linux's /proc/self/status."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024


def _reset_peak():
    """Restart the VmHWM high-water mark at the current size (Linux: write 5 to clear_refs), so
    that imports and model building before scoring do not hide the scoring's own peak."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def main():
    p = argparse.ArgumentParser(prog="python -m bench.hellaswag_speed", description=__doc__.split("\n")[0])
    p.add_argument("--data", help="a HellaSwag jsonl file (default: synthetic examples)")
    p.add_argument("--examples", type=int, default=128, help="how many examples to score")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[4, 16],
                   help="examples per forward pass in the batched modes (1 = one at a time is always run)")
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3, help="best of this many timed runs per mode")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--cpus", default=None, help="pin to these CPUs, e.g. 0,1 (default: as started)")
    p.add_argument("--memory", action="store_true", help="also the peak memory of each batch size")
    p.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)   # one --memory measurement
    args = p.parse_args()
    if args.cpus:
        try:
            os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
        except (ValueError, OSError):
            p.error(f"--cpus takes CPU numbers this process may use, separated by commas (got {args.cpus!r})")
    if args.threads:
        torch.set_num_threads(args.threads)

    tok = load_gpt2_tokenizer()
    examples = hellaswag_scoring.load_examples(args.data) if args.data else synthetic_examples(args.examples)
    examples = examples[:args.examples]
    model = make_model(args.n_layer, args.n_head, args.n_embd)
    if args.memory_child:
        before = _status_mb("VmRSS")
        _reset_peak()
        hellaswag_scoring.evaluate(model, examples, tok, "cpu", batch_size=args.memory_child)
        print(f"{before:.1f} {_status_mb('VmHWM'):.1f}")
        return
    n_params = sum(p.numel() for p in model.parameters())
    rows = [hellaswag_scoring.render_example(ex, tok)[0].size(1) for ex in examples]
    print(f"model: train_gpt2.GPT, {args.n_layer} layers, {args.n_embd} wide, {n_params / 1e6:.1f}M params; "
          f"{len(examples)} examples ({'file ' + args.data if args.data else 'synthetic'}), "
          f"mean row length {sum(rows) / len(rows):.0f} tokens; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, CPUs {','.join(map(str, sorted(os.sched_getaffinity(0))))}, "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    start = time.perf_counter()
    for ex in examples:
        hellaswag_scoring.render_example(ex, tok)
    render_s = time.perf_counter() - start
    hellaswag_scoring.evaluate(model, examples[:8], tok, "cpu", batch_size=4)  # warm-up

    batch_sizes = sorted({1, *args.batch_sizes})
    wall, cpu, counts = time_modes(model, examples, tok, batch_sizes, args.repeats)
    n = len(examples)
    for b in batch_sizes:
        name = "one at a time" if b == 1 else f"batched, {b}/pass"
        print(f"{name:>18}: {n / wall[b]:6.1f} examples/s wall ({wall[b]:.2f} s, {wall[1] / wall[b]:.2f}x) | "
              f"{n / cpu[b]:6.1f} examples per CPU-second ({cpu[1] / cpu[b]:.2f}x) | {counts[b]}")
    assert all(c == counts[1] for c in counts.values()), "batched and one-at-a-time scoring disagree"
    print(f"tokenizing alone: {len(examples) / render_s:.0f} examples/s; hellaswag_scoring.evaluate's default on a "
          f"CPU: {hellaswag_scoring.default_batch_size('cpu')}/pass; load average after: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.memory:
        for b in batch_sizes:
            before, after = peak_memory_mb(args, b)
            print(f"peak memory, {b:>2}/pass: {after:7.1f} MB ({after - before:+.1f} MB while scoring; a fresh process)")


if __name__ == "__main__":
    main()
