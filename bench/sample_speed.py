"""Benchmark: sampling with the KV cache against recomputing the whole context at every step.

    taskset -c 0 python -m bench.sample_speed          # GPT-2 124M shape, 256 new tokens, CPU, 1 thread
    python -m bench.sample_speed --model tiny --new_tokens 32 --rounds 2

Both modes run train_gpt2.generate on the same randomly initialised model (speed does not depend
on the weights), the same prompt and the same seed, and must produce the same tokens: the
benchmark checks that before printing figures. Rounds alternate the modes (cache, recompute,
recompute, cache, ...) so that load from other processes falls on both; the load average is
printed with the figures.
"""
import argparse
import os
import time

import torch

import train_gpt2 as tg
from errors import fail

PROMPT_TOKENS = 16  # a short prompt: the new tokens are what a generation's time goes into


def time_generation(model, prompt, new_tokens, use_cache):
    """(seconds, token ids) of one generation of new_tokens after prompt."""
    start = time.perf_counter()
    ids = tg.generate(model, prompt, 1, new_tokens, generator=torch.Generator().manual_seed(0),
                      use_cache=use_cache)
    return time.perf_counter() - start, ids


def run(model_name, new_tokens, rounds, log=print):
    torch.manual_seed(0)
    model = tg.GPT(tg.model_config(tg.TrainConfig(model=model_name))).eval()
    prompt = torch.randint(0, model.config.vocab_size, (PROMPT_TOKENS,)).tolist()
    time_generation(model, prompt, 2, True)  # first-call set-up (allocator, kernels) off the clock
    seconds = {True: [], False: []}
    outputs = {}
    for r in range(rounds):
        for use_cache in ((True, False) if r % 2 == 0 else (False, True)):
            dt, outputs[use_cache] = time_generation(model, prompt, new_tokens, use_cache)
            seconds[use_cache].append(dt)
            log(f"  round {r + 1}: {'KV cache ' if use_cache else 'recompute'} {dt:7.2f} s"
                f" ({new_tokens / dt:7.1f} tokens/s)")
    if outputs[True] != outputs[False]:
        raise fail("bench.sample_speed", "the cached and recomputed generations differ: a KV cache bug")
    best = {mode: min(times) for mode, times in seconds.items()}
    return {"tokens_per_s_cache": new_tokens / best[True], "tokens_per_s_recompute": new_tokens / best[False],
            "speedup": best[False] / best[True], "params": sum(p.numel() for p in model.parameters())}


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.sample_speed", description=__doc__.split("\n")[0])
    p.add_argument("--model", default="gpt2", choices=list(tg.MODEL_PRESETS), help="model shape")
    p.add_argument("--new_tokens", type=int, default=256, help="tokens generated per run")
    p.add_argument("--rounds", type=int, default=1, help="runs of each mode (best one counts)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: pin with taskset -c 0)")
    args = p.parse_args(argv)
    if args.new_tokens < 1 or args.rounds < 1 or args.threads < 1:
        p.error("--new_tokens, --rounds and --threads must be at least 1")
    torch.set_num_threads(args.threads)
    print(f"bench.sample_speed: {args.model}, {args.new_tokens} new tokens after {PROMPT_TOKENS},"
          f" batch 1, {args.threads} thread(s), load average {os.getloadavg()[0]:.2f}")
    result = run(args.model, args.new_tokens, args.rounds)
    print(f"{result['params']:,} parameters: KV cache {result['tokens_per_s_cache']:.1f} tokens/s,"
          f" recompute {result['tokens_per_s_recompute']:.1f} tokens/s, speed-up"
          f" {result['speedup']:.1f}x (same tokens); load average {os.getloadavg()[0]:.2f}")
    return result


if __name__ == "__main__":
    main()
