"""train_gpt2's optimizer step against the plain nanoGPT-style one, on the CPU: time and peak memory.

    taskset -c 0 python -m bench.step_speed                  # issue 15's shape: 6 x 384, context 256, batch 8
    taskset -c 0 python -m bench.step_speed --rounds 5 --memory timed
    python -m bench.step_speed --n-layer 2 --n-embd 32 --n-head 2 --seq-len 16 --micro-batch 2 --memory none

"ours" is train_gpt2.GPT, whose loss (chunked_loss.linear_cross_entropy) makes the output layer's
logits and the cross-entropy a chunk of tokens at a time, softmax over exactly vocab_size columns.
"plain" is PlainGPT below: the same weights and blocks, but the loss as build-nanogpt writes it,
full-width logits over every padded column, then F.cross_entropy. Both take whole optimizer steps
through train_gpt2's own train_step and configure_optimizer (AdamW, TrainConfig's settings), in
float32, without torch.compile, on the same batch from the same starting weights, so the loss
path is the only difference.

Time: one warm-up step each (AdamW creates its state then), then --rounds rounds of --steps steps
per model, the order alternating AB, BA, AB, ... so that a slow spell of the machine falls on both
alike; one torch thread. Run it pinned to one core (`taskset -c 0`): the header says whether it
is. The figure is the median over rounds of ours/plain, each round's ratio taken from times
measured seconds apart; a bare time would say more about the machine than about the code. CPU
seconds per step are shown beside wall seconds: on a shared machine they leave out the time
another process held the core.

Memory: for each shape, a fresh Python process per model builds model, optimizer and batch, notes
its resident memory (RSS), runs one full step and reads its peak RSS (Linux's VmHWM). "step extra" is
the peak minus the RSS after building: the step's own memory (activations, logits, gradients and
AdamW's two moments, which its first step creates); "total" is the process's peak.
"""
import argparse
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

import train_gpt2 as tg
from bench import REPO_ROOT
from errors import fail

MB = 2**20
TARGET_TIME_RATIO = 0.95      # issue 15: our step at most 0.95x the plain one's time (6 x 384 shape)
TARGET_MEMORY_SAVING = 0.30   # issue 15: at least 30% lower peak memory for GPT-2 124M at 4 x 1024


class PlainGPT(tg.GPT):
    """train_gpt2.GPT with the loss as build-nanogpt computes it: logits over all padded_vocab_size
    columns (50,304 for GPT-2), a (B, T, 50304) float tensor kept for backward, then cross_entropy
    over all of them. The trunk below repeats GPT.forward's line for line (test_step_speed checks
    that both give the same loss when there are no padding columns)."""

    def forward(self, idx, targets=None):
        B, T = idx.shape
        if T > self.config.block_size:
            raise ValueError(f"{T} tokens is longer than block_size {self.config.block_size}")
        pos = torch.arange(T, device=idx.device)
        x = self.embd_dropout(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        logits = self.lm_head(x)  # (B, T, padded_vocab_size): the padding columns included
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
        return logits, loss


MODELS = {"ours": tg.GPT, "plain": PlainGPT}


@dataclass(frozen=True)  # hashable: a shape asked for twice is measured once
class Shape:
    n_layer: int
    n_head: int
    n_embd: int
    seq_len: int       # the context: block_size, and the tokens per sequence
    micro_batch: int   # sequences per step (one micro step, no accumulation)
    vocab_size: int

    def config(self):
        return tg.GPTConfig(n_layer=self.n_layer, n_head=self.n_head, n_embd=self.n_embd,
                            block_size=self.seq_len, vocab_size=self.vocab_size)

    def label(self):
        return f"{self.n_layer}x{self.n_embd}, {self.micro_batch}x{self.seq_len} tokens"


ISSUE_SHAPE = Shape(n_layer=6, n_head=6, n_embd=384, seq_len=256, micro_batch=8,
                    vocab_size=tg.GPTConfig.vocab_size)  # issue 15's timing shape
GPT2_124M = Shape(**tg.MODEL_PRESETS["gpt2"], seq_len=1024, micro_batch=4,
                  vocab_size=tg.GPTConfig.vocab_size)     # issue 15's memory target


class OneBatch:
    """A loader for train_step that serves the same (x, y) every time: both models then see
    identical batches, and the step costs what it would on real tokens."""

    def __init__(self, shape, seed=0):
        generator = torch.Generator().manual_seed(seed)
        n = shape.micro_batch * shape.seq_len
        tokens = torch.randint(shape.vocab_size, (n + 1,), generator=generator)
        self.batch = (tokens[:-1].view(shape.micro_batch, shape.seq_len),
                      tokens[1:].view(shape.micro_batch, shape.seq_len))

    def next_batch(self):
        return self.batch


def make_step(shape, name, weights=None):
    """Model `name` (seed 0, or a copy of `weights`), its AdamW and a step() -> loss that runs one
    optimizer step exactly as the training loop does (TrainConfig's lr, betas, decay, clipping)."""
    torch.manual_seed(0)
    model = MODELS[name](shape.config())
    if weights is not None:
        model.load_state_dict(weights)
    tc = tg.TrainConfig()
    optimizer = tg.configure_optimizer(model, tc.weight_decay, tc.max_lr, (tc.beta1, tc.beta2),
                                       tc.eps, "cpu")
    loader = OneBatch(shape)

    def step():
        loss, _ = tg.train_step(model, optimizer, loader, grad_accum_steps=1, lr=tc.max_lr,
                                grad_clip=tc.grad_clip, device="cpu", amp_dtype=torch.float32)
        return loss.item()

    return model, step


def time_rounds(steps, rounds, steps_per_round, report):
    """Wall and CPU seconds per step of each model, round by round, the order alternating (AB, BA,
    ...). CPU seconds leave out the time another process held our core: on a shared machine they
    are the steadier figure, wall time the one a user waits. report(round, result) is called after
    each round, so progress shows while it runs."""
    names = list(steps)
    results = []
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        seconds, cpu = {}, {}
        for name in order:
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(steps_per_round):
                steps[name]()
            seconds[name] = (time.perf_counter() - start) / steps_per_round
            cpu[name] = (time.process_time() - start_cpu) / steps_per_round
        result = {"order": "".join("AB"[names.index(n)] for n in order), "seconds": seconds, "cpu": cpu,
                  "ratio": seconds["ours"] / seconds["plain"], "cpu_ratio": cpu["ours"] / cpu["plain"],
                  "load": os.getloadavg()[0]}
        results.append(result)
        report(r + 1, result)
    return results


# Memory ------------------------------------------------------------------------------------------

def proc_status_bytes(field):
    """A memory figure of this process from Linux's /proc/self/status (given in kB), or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def rss_peak():
    """This process's peak resident memory, in bytes. On Linux, VmHWM: the high-water mark of
    this program's own address space. Not getrusage's ru_maxrss there: it survives exec, so a
    child started by a 3 GB parent would report at least 3 GB. Elsewhere ru_maxrss (bytes on
    macOS, KiB on other systems)."""
    peak = proc_status_bytes("VmHWM")
    if peak is not None:
        return peak
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def rss_now():
    """This process's resident memory now, in bytes (without /proc: the peak so far)."""
    now = proc_status_bytes("VmRSS")
    return now if now is not None else rss_peak()


def memory_child(shape_json, name, threads):
    """Run in a fresh process (see measure_memory): build, note RSS, one step, print peak RSS."""
    torch.set_num_threads(threads)
    _, step = make_step(Shape(**json.loads(shape_json)), name)
    built = rss_now()
    loss = step()
    print(json.dumps({"built": built, "peak": rss_peak(), "loss": loss}))


def measure_memory(shape, name, threads):
    """{"built", "peak", "extra"} bytes of one full step of `name` at `shape`, in a new process:
    a process's peak RSS can only grow, so each measurement needs a process of its own."""
    code = "import sys; from bench import step_speed; step_speed.memory_child(*sys.argv[1:3], int(sys.argv[3]))"
    done = subprocess.run([sys.executable, "-c", code, json.dumps(dataclasses.asdict(shape)), name,
                           str(threads)], cwd=REPO_ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"memory measurement of {name} at {shape.label()} failed:\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["extra"] = result["peak"] - result["built"]
    return result


# The command -------------------------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m bench.step_speed", description=__doc__.split("\n")[0])
    s = ISSUE_SHAPE
    p.add_argument("--n-layer", type=int, default=s.n_layer, help=f"blocks (default {s.n_layer})")
    p.add_argument("--n-head", type=int, default=s.n_head, help=f"heads per block (default {s.n_head})")
    p.add_argument("--n-embd", type=int, default=s.n_embd, help=f"width (default {s.n_embd})")
    p.add_argument("--seq-len", type=int, default=s.seq_len, help=f"context = tokens per sequence (default {s.seq_len})")
    p.add_argument("--micro-batch", type=int, default=s.micro_batch, help=f"sequences per step (default {s.micro_batch})")
    p.add_argument("--vocab", type=int, default=s.vocab_size,
                   help=f"vocabulary, padded inside the model to a multiple of {tg.GPTConfig.vocab_multiple}"
                        f" (default GPT-2's {s.vocab_size})")
    p.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (default 3)")
    p.add_argument("--steps", type=int, default=2, help="timed optimizer steps per model per round (default 2)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as pinned to one core)")
    p.add_argument("--memory", choices=["all", "timed", "none"], default="all",
                   help="peak memory of the timed shape and GPT-2 124M at 4 x 1024 (all, default), the timed"
                        " shape only, or none")
    args = p.parse_args(argv)
    if min(args.n_layer, args.n_head, args.n_embd, args.seq_len, args.micro_batch, args.vocab, args.rounds,
           args.steps, args.threads) < 1:
        raise fail("bench.step_speed", "every size, --rounds, --steps and --threads must be >= 1")
    if args.n_embd % args.n_head:
        raise fail("bench.step_speed", f"--n-embd {args.n_embd} does not divide by --n-head {args.n_head}")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(args.threads)
    shape = Shape(args.n_layer, args.n_head, args.n_embd, args.seq_len, args.micro_batch, args.vocab)
    config = shape.config()
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    pinned = f"pinned to CPU {cpus[0]}" if cpus and len(cpus) == 1 else \
        f"NOT pinned ({len(cpus) if cpus else '?'} CPUs allowed; run under taskset -c 0)"
    print(f"bench.step_speed: train_gpt2's step (chunked loss) vs the plain one (full-width logits +"
          f" F.cross_entropy); fp32, no compile, torch {torch.__version__}, {torch.get_num_threads()} thread(s),"
          f" {pinned}, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    ours_model, ours_step = make_step(shape, "ours")
    _, plain_step = make_step(shape, "plain", weights=ours_model.state_dict())
    n_params = sum(p.numel() for p in ours_model.parameters())
    print(f"shape: {shape.n_layer} layers x {shape.n_embd} wide, {shape.n_head} heads, context {shape.seq_len},"
          f" micro batch {shape.micro_batch}, vocab {config.vocab_size:,} padded to {config.padded_vocab_size:,};"
          f" {n_params / 1e6:.1f}M parameters; {args.rounds} rounds x {args.steps} steps each")
    # The warm-up step of each: same weights, same batch, so the losses differ only by the
    # padding columns that plain's softmax also covers (zero logits: a little probability each).
    first = {"ours": ours_step(), "plain": plain_step()}
    print(f"first-step loss, same weights and batch: ours {first['ours']:.6f}, plain {first['plain']:.6f}"
          f" ({config.padded_vocab_size - config.vocab_size} padding columns in plain's softmax)")

    print(f"{'round':>5} {'order':>5} {'ours s':>8} {'plain s':>8} {'ours/plain':>10}"
          f" {'ours cpu s':>10} {'plain cpu s':>11} {'ours/plain':>10} {'load 1m':>8}")

    def report(i, r):
        print(f"{i:>5} {r['order']:>5} {r['seconds']['ours']:>8.3f} {r['seconds']['plain']:>8.3f} {r['ratio']:>10.3f}"
              f" {r['cpu']['ours']:>10.3f} {r['cpu']['plain']:>11.3f} {r['cpu_ratio']:>10.3f} {r['load']:>8.2f}",
              flush=True)

    rounds = time_rounds({"ours": ours_step, "plain": plain_step}, args.rounds, args.steps, report)
    median = statistics.median(r["ratio"] for r in rounds)
    median_cpu = statistics.median(r["cpu_ratio"] for r in rounds)
    for what, m in (("step time", median), ("CPU time per step", median_cpu)):
        target = ""
        if shape == ISSUE_SHAPE:
            target = f" (issue 15's target: <= {TARGET_TIME_RATIO}, {'met' if m <= TARGET_TIME_RATIO else 'NOT met'})"
        print(f"median ours/plain {what}: {m:.3f}{target}")
    del ours_model, ours_step, plain_step

    shapes = {"all": [shape, GPT2_124M], "timed": [shape], "none": []}[args.memory]
    memory = []
    if shapes:
        print("peak memory, a fresh process per model, one full step (MB of RSS):")
        print(f"{'shape':<26} {'model':<6} {'after build':>11} {'step extra':>10} {'total peak':>10}")
    for s in dict.fromkeys(shapes):  # each shape once
        row = {"shape": s, **{name: measure_memory(s, name, args.threads) for name in MODELS}}
        for name in MODELS:
            m = row[name]
            print(f"{s.label():<26} {name:<6} {m['built'] / MB:>11,.0f} {m['extra'] / MB:>10,.0f} {m['peak'] / MB:>10,.0f}")
        saving = {k: 1 - row["ours"][k] / row["plain"][k] for k in ("extra", "peak")}
        target = ""
        if s == GPT2_124M:
            target = (f"; issue 15's target: total >= {TARGET_MEMORY_SAVING:.0%} lower,"
                      f" {'met' if saving['peak'] >= TARGET_MEMORY_SAVING else 'NOT met'}")
        print(f"{'':<26} ours uses {saving['extra']:.0%} less step memory, {saving['peak']:.0%} less in total{target}",
              flush=True)
        memory.append(row)
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return {"first_loss": first, "rounds": rounds, "median_ratio": median, "median_cpu_ratio": median_cpu,
            "memory": memory}


if __name__ == "__main__":
    main()
