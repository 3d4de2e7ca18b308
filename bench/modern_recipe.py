"""The modern recipe against GPT-2's, step for step, on the first run's data: how many steps does
--recipe=modern need to reach the val bits/byte that GPT-2's recipe ends at, and what does each
of its options bring on its own?

    python -m bench.modern_recipe                           # both recipes + the ablation, 1,200 steps
    python -m bench.modern_recipe --runs gpt2 modern        # the two recipes only
    taskset -c 0 python -m bench.modern_recipe --threads 1 --steps 600   # shorter (say so when quoting)

Every run is train_gpt2.main() exactly as first_run.py calls it (first_run.prepare_data's
tokenizer and shards, first_run.train_args' settings, so the same data order and step count),
the recipe flags being the only difference between runs:
  gpt2, modern     --recipe=gpt2, --recipe=modern
  gpt2+OPTION      GPT-2's recipe with one modern option: gpt2+rope, +rmsnorm, +qk_norm, +relu2,
                   +zero_init, +untied_head, +muon (Muon at modern's LR)
  modern-OPTION    the modern recipe without it (modern-muon: AdamW for every parameter)

Val bits/byte is measured every --eval_every steps. "Steps to GPT-2's final" is where modern's
curve (straight lines between its evaluations) first reaches the bits/byte GPT-2's recipe ends
at. It is read off modern's run of the full length, still mid-schedule at that point; a run
planned that short would decay its LR sooner and likely get there earlier, so the figure errs on
the slow side. Time per step is the median of a run's step times (data included, evaluation not).
"""
import argparse
import contextlib
import io
import os
import shutil
import statistics
import sys
import time

import torch
from matplotlib.figure import Figure  # drawn straight to a file, as plot.py does

import bpe
import files
import first_run as fr
import flags
import run_log
import train_gpt2 as tg
from bench import REPO_ROOT
from errors import fail

MODERN = tg.RECIPES["modern"]
# an option's name in run names: what the modern recipe has instead of GPT-2's
LABELS = {"position": "rope", "norm": "rmsnorm", "activation": "relu2", "tie_head": "untied_head",
          "muon_lr": "muon"}
TARGET_SHARE = 0.5            # issue 14: modern reaches GPT-2's final val bits/byte in <= 50% of the steps
DEFAULT_EVAL_EVERY = 30       # 40 points on a 1,200-step curve: the crossing is read to ~2.5% of the run


def gpt2_value(option):
    """What GPT-2's recipe has for a modern option: GPTConfig's default, or no Muon."""
    return 0.0 if option == "muon_lr" else getattr(tg.GPTConfig(), option)


# run name -> the train_gpt2 settings that make it
RUNS = {"gpt2": {"recipe": "gpt2"}, "modern": {"recipe": "modern"},
        **{f"gpt2+{LABELS.get(k, k)}": {"recipe": "gpt2", k: v} for k, v in MODERN.items()},
        **{f"modern-{LABELS.get(k, k)}": {"recipe": "modern", k: gpt2_value(k)} for k in MODERN}}


def steps_to_reach(curve, target):
    """The first step where `curve` [(step, bits/byte), ...], read as straight lines between its
    points, is at or below `target`; None if it never gets there."""
    if curve and curve[0][1] <= target:
        return float(curve[0][0])
    for (s0, b0), (s1, b1) in zip(curve, curve[1:]):
        if b1 <= target:  # b0 > target here, so the line crosses it between s0 and s1
            return s0 + (s1 - s0) * (b0 - target) / (b0 - b1)
    return None


def train(name, tok_path, shard_dir, out, args, log=print):
    """One run from scratch (its log dir replaced); its val curve, time per step and size."""
    log_dir = os.path.join(out, "logs", name.replace("+", "_plus_").replace("-", "_minus_"))
    shutil.rmtree(log_dir, ignore_errors=True)
    settings = {"eval_interval": args.eval_every, "num_samples": 0, **args.train, **RUNS[name]}
    argv = fr.train_args(tok_path, shard_dir, log_dir, args.model, args.steps, settings)
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the whole log is in log_dir/log.txt
        tg.main(argv)
    wall = time.perf_counter() - t0
    metrics = run_log.read_metrics(log_dir)
    curve = [(step, r["bits_per_byte"]) for step, r in sorted(metrics["val"].items())]
    step_times = [r["dt"] for step, r in sorted(metrics["train"].items()) if step > 0] or \
        [r["dt"] for r in metrics["train"].values()]  # step 0 warms up: left out when there are others
    tc = tg.TrainConfig(**flags.parse_overrides(tg.TrainConfig, argv))
    with torch.device("meta"):  # shapes only
        model = tg.GPT(tg.model_config(tc, bpe.load_tokenizer(tok_path).vocab_size))
    result = {"name": name, "settings": RUNS[name], "curve": curve, "final": curve[-1][1],
              "tokens_per_step": tc.total_batch_size,
              "ms_per_step": 1000 * statistics.median(step_times),
              "params": sum(p.numel() for p in model.parameters()), "wall_s": wall, "log_dir": log_dir}
    log(f"  {name:18s} {result['final']:.4f} bits/byte after {curve[-1][0]} steps,"
        f" {result['ms_per_step']:.1f} ms/step, {result['params']:,} params ({wall:.0f} s,"
        f" load {os.getloadavg()[0]:.2f})", flush=True)
    return result


def plot(results, target, crossing, path, title):
    fig = Figure(figsize=(8, 5), dpi=100)
    ax = fig.subplots()
    for name, color in (("gpt2", "tab:blue"), ("modern", "tab:orange")):
        if name in results:
            steps, bpb = zip(*results[name]["curve"])
            ax.plot(steps, bpb, "o-", markersize=3, color=color, label=f"--recipe={name}")
    if target is not None:
        ax.axhline(target, color="gray", linestyle="--", linewidth=1, label=f"GPT-2's final: {target:.3f}")
    if crossing is not None:
        ax.axvline(crossing, color="tab:orange", linestyle=":", linewidth=1,
                   label=f"modern reaches it at step {crossing:.0f}")
    ax.set_xlabel("step")
    ax.set_ylabel("val bits per byte")
    if target is not None:  # a start far above (a toy vocabulary's) would flatten the curves
        ax.set_ylim(top=min(ax.get_ylim()[1], 2 * target))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with files.atomic_write(path, "wb") as f:
        fig.savefig(f, format="png")


def table(results, steps):
    """Markdown: each run's val bits/byte at the same step, against the recipe it changes."""
    lines = [f"| run | settings | val bits/byte at step {steps:,} | vs its base | ms/step | params |",
             "|---|---|---|---|---|---|"]
    for name, r in results.items():
        base = name.partition("+")[0] if "+" in name else name.partition("-")[0] if "-" in name else None
        delta = f"{r['final'] - results[base]['final']:+.4f} vs {base}" if base in results else ""
        settings = " ".join(f"--{k}={v}" for k, v in r["settings"].items())
        lines.append(f"| {name} | {settings} | {r['final']:.4f} | {delta} | {r['ms_per_step']:.1f}"
                     f" | {r['params']:,} |")
    return "\n".join(lines)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m bench.modern_recipe", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default=os.path.join(REPO_ROOT, "runs", "modern_recipe"),
                   help="tokenizer, shards, each run's log dir, curves.png and results.json")
    p.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS), metavar="RUN",
                   help=f"which runs: {' '.join(RUNS)}")
    p.add_argument("--steps", type=int, default=fr.DEFAULT_STEPS, help="steps per run (first_run.py's)")
    p.add_argument("--eval_every", type=int, default=DEFAULT_EVAL_EVERY, help="steps between val evaluations")
    p.add_argument("--model", default="laptop", help="train_gpt2 model preset (first_run.py's)")
    p.add_argument("--vocab", type=int, default=fr.DEFAULT_VOCAB, help="BPE vocabulary (first_run.py's)")
    p.add_argument("--max_docs", type=int, default=0, help="the first N pydocs documents only (0: all)")
    p.add_argument("--val_fraction", type=float, default=fr.VAL_FRACTION, help="share of documents held out")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--train", nargs="*", default=[], metavar="NAME=VALUE",
                   help="train_gpt2 settings for every run (not the recipe's, nor first_run.py's own)")
    args = p.parse_args(argv)
    for name in ("steps", "eval_every", "vocab"):
        if getattr(args, name) < 1:
            p.error(f"--{name} {getattr(args, name)}: must be positive")
    args.train = fr.train_overrides(p, args.train, {name: f"each run sets {name} itself"
                                                    for name in [*fr.FIXED_SETTINGS, "recipe", *MODERN]})
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    runs = list(dict.fromkeys(args.runs))
    print(f"bench.modern_recipe: {len(runs)} runs of {args.steps} steps, model {args.model},"
          f" {torch.get_num_threads()} thread(s); load average {os.getloadavg()[0]:.2f}", flush=True)
    try:
        os.makedirs(args.out, exist_ok=True)
        tok_path, shard_dir = fr.prepare_data(args.out, args.vocab, args.max_docs, args.val_fraction)
    except (ValueError, OSError) as e:
        raise fail("bench.modern_recipe", e) from None
    results = {name: train(name, tok_path, shard_dir, args.out, args) for name in runs}
    target = results["gpt2"]["final"] if "gpt2" in results else None
    crossing = steps_to_reach(results["modern"]["curve"], target) if target and "modern" in results else None
    tokens_per_step = results[runs[0]]["tokens_per_step"]  # the same for every run
    print()
    if target is not None:
        print(f"GPT-2's recipe: {target:.4f} bits/byte after {args.steps:,} steps"
              f" ({args.steps * tokens_per_step:,} tokens)")
    if "modern" in results and target is not None:
        share = None if crossing is None else crossing / args.steps
        verdict = "never" if crossing is None else (
            f"at step {crossing:.0f} ({crossing * tokens_per_step:,.0f} tokens):"
            f" {share:.0%} of GPT-2's steps;"
            f" target <= {TARGET_SHARE:.0%}: " + ("met" if share <= TARGET_SHARE else "MISSED"))
        print(f"modern recipe: {results['modern']['final']:.4f} bits/byte after {args.steps:,} steps;"
              f" reaches {target:.4f} {verdict}")
    print()
    print(table(results, args.steps))
    png = os.path.join(args.out, "curves.png")
    plot(results, target, crossing, png, f"val bits/byte, {args.model} on pydocs, {args.steps} steps")
    summary = {"steps": args.steps, "tokens_per_step": tokens_per_step, "target": target,
               "crossing_step": crossing, "threads": torch.get_num_threads(),
               "load_average_end": os.getloadavg()[0], "runs": results}
    files.write_json(os.path.join(args.out, "results.json"), summary)
    print(f"\ncurves {png}; figures {os.path.join(args.out, 'results.json')}; load average at the end"
          f" {os.getloadavg()[0]:.2f}")
    return summary


if __name__ == "__main__":
    main()
