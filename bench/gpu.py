"""GPU throughput of train_gpt2.py's real training step: tokens/s, MFU, peak memory, warm-up time.

    python -m bench.gpu --suite                                  # everything a lent GPU should tell us, one table, < 8 min
    python -m bench.gpu                                          # GPT-2 124M, T=1024, 0.5M-token steps
    python -m bench.gpu --models gpt2 gpt2-medium gpt2-large gpt2-xl   # which sizes fit, and how fast
    python -m bench.gpu --compile false                          # measure one change at a time against a baseline
    python -m bench.gpu --loss plain                             # build-nanogpt's full-width logits + cross_entropy
    python -m bench.gpu --data-dir data/fineweb-edu              # real shards through the real loader
    python -m bench.gpu --total-batch 65536 --track-float32 200  # does bf16 follow a true-float32 run?
    python -m bench.gpu --device cpu --models tiny --seq-len 64 --micro-batch 4 --total-batch 1024 --steps 2

The model, the optimizer (fused AdamW on CUDA), autocast and the step are train_gpt2's own (GPT,
configure_optimizer, train_step), so a speed-up measured here is one the trainer gets. Each
timed step is a whole optimizer step of --total-batch tokens with gradient accumulation, ended by
reading the loss (.item() waits for the GPU), exactly as the training loop does. The first
--warmup steps are timed apart: they hold torch.compile's compilation, kernel autotuning and the
memory allocator growing. Without --data-dir the tokens are random ids from the CPU, which cost
the GPU exactly what real ones do. A micro batch that runs out of memory is halved until one fits.
--loss plain swaps in bench.step_speed.PlainGPT, the loss as build-nanogpt computes it, for the
trainer's chunked one. --track-float32 then trains each model twice from the same weights on the
same batches, in float32 and under autocast, and prints how far apart the two loss curves get.

--suite measures, in this order (the most telling first, so a spent --suite-budget drops the
last): the first of --models (default gpt2) eager and compiled, with the chunked loss and with
the plain one, at --micro-batch (64); each other model (default gpt2-xl), the largest micro batch
that fits (eager, so no compilation time; compiled code usually needs less memory, not more) and
its speed; the first model compiled at half and a quarter of --micro-batch (32, 16). Its steps are
0.13M tokens (2 to 8 micro batches: the optimizer's share of a step stays under a percent on a
124M model), 2 warm-up and at most 5 timed steps per row, the timed steps stopping once they
have taken --row-budget (20) seconds, and no new row started after --suite-budget (420) seconds.
"""
import argparse
import dataclasses
import gc
import sys
import time
from dataclasses import dataclass

import torch

import bpe
import flags
import shard_format
import train_gpt2 as tg
from bench.step_speed import PlainGPT
from errors import UserError, fail
from peak_flops import peak_flops

GIB = 2**30
LOSSES = {"chunked": tg.GPT, "plain": PlainGPT}  # the trainer's loss, and build-nanogpt's

# What a plain run measures, and what --suite does instead (flags given on the command line win).
# The suite's 2**17-token steps are 2 to 8 micro batches of 64 to 16 x 1024 tokens: tokens/s is
# a property of the micro steps, and AdamW's update, once per step, is a few ms on a 124M model.
SINGLE = dict(models=["gpt2"], total_batch=tg.TrainConfig.total_batch_size, steps=10, warmup=3, row_budget=None)
SUITE = dict(models=["gpt2", "gpt2-xl"], total_batch=2**17, steps=5, warmup=2, row_budget=20.0)
SUITE_BUDGET_S = 420  # start no new row after 7 minutes: the last one ends well within 8


@dataclass(frozen=True)
class Row:
    """One measurement: a model, its loss, compiled or not, the micro batch to try first."""
    preset: str
    loss: str = "chunked"
    compile: bool = False
    micro_batch: int = 64


class RandomTokens:
    """A stand-in for TokenShardLoader: next_batch() -> (x, y) of random ids, on the CPU as the
    real ones are. With `period`, the batches repeat every `period` calls: a model can learn them
    by heart, so its loss falls, which is what comparing two precisions needs."""

    def __init__(self, batch_size, seq_len, vocab_size, seed=0, period=None):
        self.B, self.T, self.vocab_size = batch_size, seq_len, vocab_size
        self.seed, self.period, self.calls = seed, period, 0
        self.generator = torch.Generator().manual_seed(seed)

    def next_batch(self):
        if self.period:
            self.generator.manual_seed(self.seed + self.calls % self.period)
        self.calls += 1
        tokens = torch.randint(self.vocab_size, (self.B * self.T + 1,), generator=self.generator)
        return tokens[:-1].view(self.B, self.T), tokens[1:].view(self.B, self.T)


def build(row, args, device, tokenizer=None, period=None):
    """A fresh row.preset (seed 0) with row.loss, its fused AdamW, a loader and a step() that runs one
    optimizer step of args.total_batch tokens and returns its loss (waiting for the device, as training does)."""
    device_type = device.split(":")[0]
    vocab_size = tokenizer.vocab_size if tokenizer is not None else tg.GPTConfig.vocab_size
    config = tg.GPTConfig(**tg.MODEL_PRESETS[row.preset], vocab_size=vocab_size)
    if args.seq_len > config.block_size:
        raise fail("bench.gpu", f"--seq-len {args.seq_len} is longer than {row.preset}'s block size {config.block_size}")
    if args.total_batch % (row.micro_batch * args.seq_len):
        raise fail("bench.gpu", f"--total-batch {args.total_batch} is not a multiple of micro batch x seq len"
                         f" = {row.micro_batch} x {args.seq_len}")
    grad_accum_steps = args.total_batch // (row.micro_batch * args.seq_len)
    torch.manual_seed(0)
    with torch.device(device):
        model = LOSSES[row.loss](config)
    tc = tg.TrainConfig()
    optimizer = tg.configure_optimizer(model, tc.weight_decay, tc.max_lr, (tc.beta1, tc.beta2), tc.eps, device_type)
    step_model = torch.compile(model) if row.compile else model
    if tokenizer is not None:
        loader = tg.TokenShardLoader(args.data_dir, "train", row.micro_batch, args.seq_len, tokenizer, seed=0)
    else:
        loader = RandomTokens(row.micro_batch, args.seq_len, vocab_size, period=period)

    def step(amp_dtype):
        loss, _ = tg.train_step(step_model, optimizer, loader, grad_accum_steps=grad_accum_steps, lr=tc.max_lr,
                                grad_clip=tc.grad_clip, device=device, amp_dtype=amp_dtype)
        return loss.item()

    return model, grad_accum_steps, step


def forget_earlier_models():
    """Free what earlier measurements left behind before the next one. torch.compile's caches hold
    compiled models (and their weights) alive and count towards its recompile limit; a model that
    just ran out of memory is garbage only after a collection; and the CUDA allocator keeps freed
    blocks for reuse unless told to return them."""
    torch._dynamo.reset()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def measure(row, args, device, amp_dtype, tokenizer=None):
    """Build row's model afresh, run args.warmup steps, then up to args.steps timed ones (fewer once
    the timed ones have taken args.row_budget seconds, but at least one); return the figures."""
    device_type = device.split(":")[0]
    row_start = time.perf_counter()
    forget_earlier_models()
    if device_type == "cuda":  # from here on, the peak is this row's own
        torch.cuda.reset_peak_memory_stats(device)
    model, grad_accum_steps, step = build(row, args, device, tokenizer)
    start = time.perf_counter()
    for _ in range(args.warmup):
        step(amp_dtype)
    warmup_s = time.perf_counter() - start
    start, losses = time.perf_counter(), []
    while len(losses) < args.steps and not (
            losses and args.row_budget is not None and time.perf_counter() - start > args.row_budget):
        losses.append(step(amp_dtype))
    step_s = (time.perf_counter() - start) / len(losses)
    tokens_per_s = args.total_batch / step_s
    device_name = torch.cuda.get_device_name(device) if device_type == "cuda" else device_type
    peak = peak_flops(device_name) if device_type == "cuda" and amp_dtype != torch.float32 else None
    return {
        "preset": row.preset, "loss_fn": row.loss, "compile": row.compile,
        "params": sum(p.numel() for p in model.parameters()),
        "micro_batch": row.micro_batch, "grad_accum_steps": grad_accum_steps,
        "tokens_per_s": tokens_per_s, "step_ms": 1000 * step_s, "warmup_s": warmup_s, "steps": len(losses),
        "mfu": tokens_per_s * tg.flops_per_token(model, args.seq_len) / peak if peak else None,
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / GIB if device_type == "cuda" else None,
        "loss": losses[-1], "row_s": time.perf_counter() - row_start,
    }


def measure_fitting(row, args, device, amp_dtype, tokenizer=None):
    """measure() at row.micro_batch, halved on out-of-memory; None if even 1 does not fit."""
    return largest_fitting(halvings(row.micro_batch), lambda b: measure(
        dataclasses.replace(row, micro_batch=b), args, device, amp_dtype, tokenizer))


# Batches the precision check cycles through (without --data-dir): few enough to be learnt by
# heart within a short run, so the loss falls steeply and the two curves can part if they will.
TRACK_PERIOD = 4


def track_float32(row, args, device, amp_dtype, tokenizer=None):
    """Train the same model from the same weights on the same batches twice, in float32 (true
    float32: no TF32) and under amp_dtype autocast: mixed precision must follow float32's loss."""
    curves, as_trained = [], torch.get_float32_matmul_precision()  # "high" (TF32) on CUDA, as in train_gpt2
    for dtype in (torch.float32, amp_dtype):
        torch.set_float32_matmul_precision("highest" if dtype == torch.float32 else as_trained)
        forget_earlier_models()
        _, _, step = build(row, args, device, tokenizer, period=TRACK_PERIOD)
        curves.append([step(dtype) for _ in range(args.track_float32)])
    torch.set_float32_matmul_precision(as_trained)
    differences = [abs(a - b) for a, b in zip(*curves)]
    worst = max(range(len(differences)), key=differences.__getitem__)
    return {"float32": curves[0], "mixed": curves[1], "max_difference": differences[worst], "worst_step": worst,
            "last_difference": differences[-1]}


def largest_fitting(micro_batches, run):
    """run(micro_batch) for each size in turn (largest first) until one does not run out of memory.
    Returns that run's result, or None if even the smallest did not fit."""
    for micro_batch in micro_batches:
        try:
            return run(micro_batch)
        except torch.OutOfMemoryError:
            print(f"  micro batch {micro_batch}: out of memory")
        forget_earlier_models()  # the failed model and its activations are garbage only now
    return None


def halvings(n):
    """n, n/2, n/4, ... 1."""
    sizes = [n]
    while sizes[-1] > 1:
        sizes.append(sizes[-1] // 2)
    return sizes


def suite_rows(models, micro_batch, with_compile):
    """--suite's rows, most telling first (a spent time budget drops the last ones): the first model
    eager and compiled with each loss, the other models' fit, then the first at smaller micro batches."""
    first, *others = models
    modes = [False, True] if with_compile else [False]
    rows = [Row(first, loss, c, micro_batch) for loss in LOSSES for c in modes]
    rows += [Row(m, "chunked", False, micro_batch) for m in others]
    rows += [Row(first, "chunked", modes[-1], b) for b in (micro_batch // 2, micro_batch // 4) if b >= 1]
    return list(dict.fromkeys(rows))  # a tiny --micro-batch can make two rows the same


HEADER = (f"{'model':<12} {'loss fn':<8} {'compile':<7} {'params':>9} {'micro':>6} {'accum':>6} {'tokens/s':>12}"
          f" {'MFU':>6} {'peak GiB':>9} {'step ms':>9} {'warm-up s':>9} {'row s':>7} {'loss':>7}")


def format_row(row, r):
    start = f"{row.preset:<12} {row.loss:<8} {'yes' if row.compile else 'no':<7}"
    if r is None:
        return f"{start} does not fit, even at micro batch 1"
    mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
    memory = f"{r['peak_memory_gib']:.1f}" if r["peak_memory_gib"] is not None else "-"
    return (f"{start} {r['params'] / 1e6:>8.1f}M {r['micro_batch']:>6} {r['grad_accum_steps']:>6}"
            f" {r['tokens_per_s']:>12,.0f} {mfu:>6} {memory:>9} {r['step_ms']:>9.1f} {r['warmup_s']:>9.1f}"
            f" {r['row_s']:>7.1f} {r['loss']:>7.3f}")


def compare(results, a, b, what):
    """One line: row a's tokens/s and peak memory as multiples of row b's (when both ran)."""
    ra, rb = results.get(a), results.get(b)
    if ra is None or rb is None:
        return
    memory = "-"
    if ra["peak_memory_gib"] is not None:
        memory = f"{ra['peak_memory_gib'] / rb['peak_memory_gib']:.2f}x"
    print(f"{what}: tokens/s {ra['tokens_per_s'] / rb['tokens_per_s']:.2f}x, peak memory {memory}"
          f" (micro batches {ra['micro_batch']} and {rb['micro_batch']})")


def run_suite(args, device, amp_dtype, tokenizer, with_compile):
    """Every suite row, printed as it finishes; {Row: result or None}."""
    suite_start, results = time.perf_counter(), {}
    for row in suite_rows(args.models, args.micro_batch, with_compile):
        if results and time.perf_counter() - suite_start > args.suite_budget:  # the first row always runs
            print(f"{row.preset:<12} {row.loss:<8} {'yes' if row.compile else 'no':<7} skipped: the"
                  f" {args.suite_budget:.0f} s suite budget is spent")
            continue
        results[row] = measure_fitting(row, args, device, amp_dtype, tokenizer)
        print(format_row(row, results[row]), flush=True)
    first, b = args.models[0], args.micro_batch
    compare(results, Row(first, "chunked", True, b), Row(first, "chunked", False, b), "compiled / eager (chunked loss)")
    for c, mode in ((False, "eager"), (True, "compiled")):
        compare(results, Row(first, "chunked", c, b), Row(first, "plain", c, b), f"chunked / plain loss ({mode})")
    print(f"suite: {len(results)} rows in {time.perf_counter() - suite_start:.0f} s")
    return results


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.split("\n")[0])
    parser.add_argument("--suite", action="store_true",
                        help="everything a lent GPU should tell us, one table, at most 8 minutes: the first model eager and"
                             " compiled with each loss, the others' fit, the first at micro batch /2 and /4")
    parser.add_argument("--models", nargs="+", choices=list(tg.MODEL_PRESETS),
                        help=f"presets to measure (default: {' '.join(SINGLE['models'])}; --suite:"
                             f" {' '.join(SUITE['models'])}, the first measured in full, the others' fit)")
    parser.add_argument("--micro-batch", type=int, default=tg.TrainConfig.micro_batch_size,
                        help="sequences per forward/backward to try first (halved on out-of-memory)")
    parser.add_argument("--seq-len", type=int, default=tg.TrainConfig.seq_len, help="tokens per sequence")
    parser.add_argument("--total-batch", type=int,
                        help=f"tokens per optimizer step (default {SINGLE['total_batch']:,} as in training;"
                             f" --suite: {SUITE['total_batch']:,})")
    parser.add_argument("--steps", type=int, help=f"timed optimizer steps (default {SINGLE['steps']}; --suite: {SUITE['steps']})")
    parser.add_argument("--warmup", type=int,
                        help=f"untimed-for-throughput steps first, compilation included (default {SINGLE['warmup']};"
                             f" --suite: {SUITE['warmup']})")
    parser.add_argument("--row-budget", type=float,
                        help=f"stop a row's timed steps after this many seconds, keeping one at least (default:"
                             f" none; --suite: {SUITE['row_budget']:.0f})")
    parser.add_argument("--suite-budget", type=float, default=SUITE_BUDGET_S,
                        help=f"--suite starts no new row after this many seconds (default {SUITE_BUDGET_S})")
    parser.add_argument("--device", default="auto", choices=flags.CHOICES["device"])
    parser.add_argument("--dtype", default="auto", choices=flags.CHOICES["dtype"])
    parser.add_argument("--compile", default="auto", choices=flags.CHOICES["compile"],
                        help="auto: on for CUDA, as in training (--suite: both, unless false)")
    parser.add_argument("--loss", default="chunked", choices=list(LOSSES),
                        help="chunked: the trainer's; plain: full-width logits + F.cross_entropy (--suite: both)")
    parser.add_argument("--data-dir", default="", help="read real shards with TokenShardLoader (default: random ids)")
    parser.add_argument("--tokenizer", default="gpt2", help="the shards' tokenizer, as train_gpt2's --tokenizer")
    parser.add_argument("--track-float32", type=int, default=0, metavar="STEPS",
                        help="also train each model STEPS steps in float32 and under autocast from the same start,"
                             " and print how far apart their losses get (e.g. 200)")
    args = parser.parse_args(argv)
    for name, default in (SUITE if args.suite else SINGLE).items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    if min(args.micro_batch, args.seq_len, args.total_batch, args.steps) < 1 or min(args.warmup, args.track_float32) < 0:
        parser.error("--micro-batch, --seq-len, --total-batch and --steps must be >= 1, --warmup and --track-float32 >= 0")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    device = tg.pick_device() if args.device == "auto" else args.device
    device_type = device.split(":")[0]
    if device_type == "cuda":
        if not torch.cuda.is_available():
            raise fail("bench.gpu", "--device cuda but no CUDA GPU is available")
        torch.set_float32_matmul_precision("high")  # as train_gpt2 does: TF32 for the float32 matmuls left
    amp_dtype = tg.resolve_dtype(args.dtype, device_type)
    with_compile = args.compile != "false"  # --suite: compiled rows too, unless told not to
    args.compile = args.compile == "true" or (args.compile == "auto" and device_type == "cuda")
    tokenizer = None
    if args.data_dir:
        try:
            shard_format.require_data_dir(args.data_dir)
            tokenizer = bpe.load_tokenizer(args.tokenizer)
        except (ValueError, OSError) as e:
            raise fail("bench.gpu", e) from None
    name = torch.cuda.get_device_name(device) if device_type == "cuda" else device_type
    if device_type == "cuda":
        name += f" ({torch.cuda.get_device_properties(device).total_memory / GIB:.0f} GiB)"
    compiled = "eager and compiled" if args.suite and with_compile else f"compile {args.compile}"
    print(f"bench.gpu{' --suite' if args.suite else ''} on {name}, torch {torch.__version__},"
          f" autocast {str(amp_dtype).removeprefix('torch.')}, {compiled}, seq len {args.seq_len},"
          f" {args.total_batch:,} tokens/step, {args.steps} timed steps after {args.warmup} warm-up,"
          f" data {args.data_dir or 'random ids'}")
    print(HEADER)
    try:
        if args.suite:
            results = run_suite(args, device, amp_dtype, tokenizer, with_compile)
        else:
            results = {}
            for preset in args.models:
                row = Row(preset, args.loss, args.compile, args.micro_batch)
                results[preset] = measure_fitting(row, args, device, amp_dtype, tokenizer)
                print(format_row(row, results[preset]), flush=True)
    except UserError as e:
        raise fail("bench.gpu", e) from None
    if args.track_float32 and amp_dtype == torch.float32:
        print("--track-float32: autocast is float32 here, nothing to compare (pass --dtype bfloat16)")
    elif args.track_float32:
        tracked = set()
        for result in results.values():
            if result is None or result["preset"] in tracked:
                continue
            preset = result["preset"]
            tracked.add(preset)
            row = Row(preset, result["loss_fn"], args.compile, result["micro_batch"])
            t = track_float32(row, args, device, amp_dtype, tokenizer)
            result["track"] = t
            print(f"{preset}: {args.track_float32} steps from the same start: float32 loss {t['float32'][0]:.4f}"
                  f" -> {t['float32'][-1]:.4f}, {str(amp_dtype).removeprefix('torch.')} {t['mixed'][0]:.4f}"
                  f" -> {t['mixed'][-1]:.4f}; largest difference {t['max_difference']:.4f} (step"
                  f" {t['worst_step']}), at the end {t['last_difference']:.4f}")
    return results


if __name__ == "__main__":
    main()
