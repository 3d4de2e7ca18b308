"""Plot a training run from its metrics.jsonl: loss and HellaSwag against steps.

    python plot.py log/                         # writes log/curves.png
    python plot.py runs/first_run/log --out curves.png

Top: train loss (per step, faint, and a moving average) and val loss in nats/token, with bits per
byte on the right-hand axis when the run knew its bytes per token. Bottom, when HellaSwag was
scored: acc_norm with OpenAI GPT-2 124M's and GPT-3 Small's as reference lines. Works on a run
still going and on a resumed one (a later line for a step wins).
"""
import argparse
import os
import sys

from matplotlib.figure import Figure  # drawn straight to a file: no display, no pyplot state

import files
import run_log
from errors import UserError, fail

# HellaSwag acc_norm of the models this project reproduces, as their authors report it:
# GPT-2 124M (as evaluated by build-nanogpt/lm-eval) and GPT-3 Small (GPT-3 paper, Table 3.5).
HELLASWAG_REFERENCES = {"OpenAI GPT-2 124M": 0.2955, "GPT-3 Small (125M)": 0.337}


def moving_average(values, window):
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


def plot_run(log_dir, path, title=None):
    """Draw log_dir's metrics into the PNG at `path` (written atomically); returns the kinds drawn."""
    metrics = run_log.read_metrics(log_dir)
    train, val, hellaswag = (metrics.get(k, {}) for k in ("train", "val", "hellaswag"))
    if not train and not val:
        raise UserError(f"{os.path.join(log_dir, 'metrics.jsonl')}: no train or val records to plot yet")
    fig = Figure(figsize=(8, 8 if hellaswag else 5), dpi=100)
    axes = fig.subplots(2 if hellaswag else 1, 1, squeeze=False, sharex=True)
    ax = axes[0][0]
    if train:
        steps, losses = list(train), [r["loss"] for r in train.values()]
        window = max(len(losses) // 50, 1)  # a moving average makes the trend readable
        if window > 1:
            ax.plot(steps, losses, color="tab:blue", alpha=0.25, linewidth=0.8, label="train (per step)")
        ax.plot(steps, moving_average(losses, window), color="tab:blue", linewidth=1.8,
                label=f"train ({window}-step mean)" if window > 1 else "train")
    if val:
        ax.plot(list(val), [r["loss"] for r in val.values()], "o-", color="tab:orange", label="val")
        last = list(val.values())[-1]
        if last.get("bits_per_byte"):  # bits/byte = nats/token / ln 2 / (bytes per token): one scale
            per_nat = last["bits_per_byte"] / last["loss"]
            right = ax.secondary_yaxis("right", functions=(lambda n: n * per_nat, lambda b: b / per_nat))
            right.set_ylabel("bits per byte")
            ax.annotate(f"val {last['loss']:.3f} nats/token\n= {last['bits_per_byte']:.3f} bits/byte",
                        xy=(last["step"], last["loss"]), xytext=(-10, 40), textcoords="offset points",
                        ha="right", arrowprops={"arrowstyle": "->", "color": "gray"})
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title or f"{log_dir}")
    ax.grid(alpha=0.3)
    ax.legend()
    if hellaswag:
        ax = axes[1][0]
        ax.plot(list(hellaswag), [r["acc_norm"] for r in hellaswag.values()], "o-", color="tab:green",
                label="acc_norm (this run)")
        for (name, acc), style in zip(HELLASWAG_REFERENCES.items(), ("--", ":")):
            ax.axhline(acc, color="gray", linestyle=style, label=f"{name}: {acc:.1%}")
        ax.set_ylabel("HellaSwag acc_norm")
        ax.grid(alpha=0.3)
        ax.legend()
    axes[-1][0].set_xlabel("step")
    fig.tight_layout()
    with files.atomic_write(path, "wb") as f:
        fig.savefig(f, format="png")
    return sorted(k for k in ("train", "val", "hellaswag") if metrics.get(k))


def main(argv=None):
    p = argparse.ArgumentParser(description="Plot a train_gpt2.py run's loss and HellaSwag curves.")
    p.add_argument("log_dir", help="the run's --log_dir (it holds metrics.jsonl)")
    p.add_argument("--out", help="PNG to write (default: LOG_DIR/curves.png)")
    p.add_argument("--title", help="plot title (default: the log dir)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    out = args.out or os.path.join(args.log_dir, "curves.png")
    try:
        drawn = plot_run(args.log_dir, out, args.title)
    except (ValueError, OSError) as e:
        raise fail("plot.py", e) from None
    print(f"{out}: {', '.join(drawn)}")
    return out


if __name__ == "__main__":
    main()
