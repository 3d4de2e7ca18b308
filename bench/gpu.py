"""GPU throughput of train_gpt2.py's real training step: tokens/s, MFU, peak memory, warm-up time.

    python -m bench.gpu                                          # GPT-2 124M, T=1024, 0.5M-token steps
    python -m bench.gpu --models gpt2 gpt2-medium gpt2-large gpt2-xl   # which sizes fit, and how fast
    python -m bench.gpu --compile false                          # measure one change at a time against a baseline
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
--track-float32 then trains each model twice from the same weights on the same batches, in
float32 and under autocast, and prints how far apart the two loss curves get.
"""
import argparse
import gc
import sys
import time

import torch

import bpe
import flags
import shard_format
import train_gpt2 as tg
from errors import UserError, fail
from peak_flops import peak_flops

GIB = 2**30


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


def build(preset, micro_batch, args, device, tokenizer=None, period=None):
    """A fresh `preset` (seed 0), its fused AdamW, a loader and a step() that runs one optimizer
    step of args.total_batch tokens and returns its loss (waiting for the device, as training does)."""
    device_type = device.split(":")[0]
    vocab_size = tokenizer.vocab_size if tokenizer is not None else tg.GPTConfig.vocab_size
    config = tg.GPTConfig(**tg.MODEL_PRESETS[preset], vocab_size=vocab_size)
    if args.seq_len > config.block_size:
        raise fail("bench.gpu", f"--seq-len {args.seq_len} is longer than {preset}'s block size {config.block_size}")
    if args.total_batch % (micro_batch * args.seq_len):
        raise fail("bench.gpu", f"--total-batch {args.total_batch} is not a multiple of micro batch x seq len"
                         f" = {micro_batch} x {args.seq_len}")
    grad_accum_steps = args.total_batch // (micro_batch * args.seq_len)
    torch.manual_seed(0)
    with torch.device(device):
        model = tg.GPT(config)
    optimizer = tg.configure_optimizer(model, 0.1, 6e-4, (0.9, 0.95), 1e-8, device_type)  # TrainConfig's defaults
    step_model = model
    if args.compile:
        torch._dynamo.reset()  # a fresh model (or micro batch) must not count against the recompile limit
        step_model = torch.compile(model)
    if tokenizer is not None:
        loader = tg.TokenShardLoader(args.data_dir, "train", micro_batch, args.seq_len, tokenizer, seed=0)
    else:
        loader = RandomTokens(micro_batch, args.seq_len, vocab_size, period=period)

    def step(amp_dtype):
        loss, _ = tg.train_step(step_model, optimizer, loader, grad_accum_steps=grad_accum_steps, lr=6e-4,
                                grad_clip=1.0, device=device, amp_dtype=amp_dtype)
        return loss.item()

    return model, grad_accum_steps, step


def measure(preset, micro_batch, args, device, amp_dtype, tokenizer=None):
    """Build `preset` afresh, run args.warmup + args.steps optimizer steps, return the figures."""
    device_type = device.split(":")[0]
    if device_type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model, grad_accum_steps, step = build(preset, micro_batch, args, device, tokenizer)
    start = time.perf_counter()
    for _ in range(args.warmup):
        step(amp_dtype)
    warmup_s = time.perf_counter() - start
    start = time.perf_counter()
    losses = [step(amp_dtype) for _ in range(args.steps)]
    step_s = (time.perf_counter() - start) / args.steps
    tokens_per_s = args.total_batch / step_s
    device_name = torch.cuda.get_device_name(device) if device_type == "cuda" else device_type
    peak = peak_flops(device_name) if device_type == "cuda" and amp_dtype != torch.float32 else None
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "micro_batch": micro_batch, "grad_accum_steps": grad_accum_steps,
        "tokens_per_s": tokens_per_s, "step_ms": 1000 * step_s, "warmup_s": warmup_s,
        "mfu": tokens_per_s * tg.flops_per_token(model, args.seq_len) / peak if peak else None,
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / GIB if device_type == "cuda" else None,
        "loss": losses[-1],
    }


# Batches the precision check cycles through (without --data-dir): few enough to be learnt by
# heart within a short run, so the loss falls steeply and the two curves can part if they will.
TRACK_PERIOD = 4


def track_float32(preset, micro_batch, args, device, amp_dtype, tokenizer=None):
    """Train the same model from the same weights on the same batches twice, in float32 (true
    float32: no TF32) and under amp_dtype autocast: mixed precision must follow float32's loss."""
    curves, as_trained = [], torch.get_float32_matmul_precision()  # "high" (TF32) on CUDA, as in train_gpt2
    for dtype in (torch.float32, amp_dtype):
        torch.set_float32_matmul_precision("highest" if dtype == torch.float32 else as_trained)
        _, _, step = build(preset, micro_batch, args, device, tokenizer, period=TRACK_PERIOD)
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
        gc.collect()  # the failed model and its activations are garbage only now
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return None


def halvings(n):
    """n, n/2, n/4, ... 1."""
    sizes = [n]
    while sizes[-1] > 1:
        sizes.append(sizes[-1] // 2)
    return sizes


def format_row(preset, r):
    mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
    memory = f"{r['peak_memory_gib']:.1f}" if r["peak_memory_gib"] is not None else "-"
    return (f"{preset:<12} {r['params'] / 1e6:>8.1f}M {r['micro_batch']:>6} {r['grad_accum_steps']:>6}"
            f" {r['tokens_per_s']:>12,.0f} {mfu:>6} {memory:>9} {r['step_ms']:>9.1f} {r['warmup_s']:>9.1f} {r['loss']:>7.3f}")


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["gpt2"], choices=list(tg.MODEL_PRESETS),
                        help="presets to measure (default: gpt2, the 124M model)")
    parser.add_argument("--micro-batch", type=int, default=tg.TrainConfig.micro_batch_size,
                        help="sequences per forward/backward to try first (halved on out-of-memory)")
    parser.add_argument("--seq-len", type=int, default=tg.TrainConfig.seq_len, help="tokens per sequence")
    parser.add_argument("--total-batch", type=int, default=tg.TrainConfig.total_batch_size,
                        help="tokens per optimizer step, as in training (0.5M)")
    parser.add_argument("--steps", type=int, default=10, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed-for-throughput steps first (compilation)")
    parser.add_argument("--device", default="auto", choices=flags.CHOICES["device"])
    parser.add_argument("--dtype", default="auto", choices=flags.CHOICES["dtype"])
    parser.add_argument("--compile", default="auto", choices=flags.CHOICES["compile"])
    parser.add_argument("--data-dir", default="", help="read real shards with TokenShardLoader (default: random ids)")
    parser.add_argument("--tokenizer", default="gpt2", help="the shards' tokenizer, as train_gpt2's --tokenizer")
    parser.add_argument("--track-float32", type=int, default=0, metavar="STEPS",
                        help="also train each model STEPS steps in float32 and under autocast from the same start,"
                             " and print how far apart their losses get (e.g. 200)")
    args = parser.parse_args(argv)
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
    args.compile = args.compile == "true" or (args.compile == "auto" and device_type == "cuda")
    tokenizer = None
    if args.data_dir:
        try:
            shard_format.require_data_dir(args.data_dir)
            tokenizer = bpe.load_tokenizer(args.tokenizer)
        except (ValueError, OSError) as e:
            raise fail("bench.gpu", e) from None
    name = torch.cuda.get_device_name(device) if device_type == "cuda" else device_type
    print(f"bench.gpu on {name}, torch {torch.__version__}, autocast {str(amp_dtype).removeprefix('torch.')},"
          f" compile {args.compile}, seq len {args.seq_len}, {args.total_batch:,} tokens/step,"
          f" {args.steps} timed steps after {args.warmup} warm-up, data {args.data_dir or 'random ids'}")
    print(f"{'model':<12} {'params':>9} {'micro':>6} {'accum':>6} {'tokens/s':>12} {'MFU':>6} {'peak GiB':>9}"
          f" {'step ms':>9} {'warm-up s':>9} {'loss':>7}")
    results = {}
    for preset in args.models:
        try:
            result = largest_fitting(halvings(args.micro_batch),
                                     lambda b: measure(preset, b, args, device, amp_dtype, tokenizer))
        except UserError as e:
            raise fail("bench.gpu", e) from None
        results[preset] = result
        print(format_row(preset, result) if result else f"{preset:<12} does not fit, even at micro batch 1")
    if args.track_float32 and amp_dtype == torch.float32:
        print("--track-float32: autocast is float32 here, nothing to compare (pass --dtype bfloat16)")
    elif args.track_float32:
        for preset, result in results.items():
            if result is None:
                continue
            t = track_float32(preset, result["micro_batch"], args, device, amp_dtype, tokenizer)
            result["track"] = t
            print(f"{preset}: {args.track_float32} steps from the same start: float32 loss {t['float32'][0]:.4f}"
                  f" -> {t['float32'][-1]:.4f}, {str(amp_dtype).removeprefix('torch.')} {t['mixed'][0]:.4f}"
                  f" -> {t['mixed'][-1]:.4f}; largest difference {t['max_difference']:.4f} (step"
                  f" {t['worst_step']}), at the end {t['last_difference']:.4f}")
    return results


if __name__ == "__main__":
    main()
