"""What a training run reports: lines on stdout and in log_dir/log.txt, and records in
log_dir/metrics.jsonl, one JSON object per line whose `kind` is train, val, hellaswag or sample
(after a resume a step may appear twice: the later line wins). Only rank 0 writes.
"""
import collections
import json
import os
import re
import time

from errors import UserError

# The start of a training step's line, "step   12/19073 | loss ...": first_run.py thins these out.
TRAIN_LINE = re.compile(r"step +(\d+)/\d+ \| loss ")
ETA_WINDOW = 20  # the ETA assumes the remaining steps take as long as the last 20 did on average


def duration(seconds):
    """12345.6 -> '3:25:46'."""
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


class RunLog:
    def __init__(self, log_dir, enabled):
        self.enabled, self.started = enabled, time.perf_counter()
        self.recent = collections.deque(maxlen=ETA_WINDOW)  # the last steps' seconds
        if enabled:
            os.makedirs(log_dir, exist_ok=True)
            self.text = open(os.path.join(log_dir, "log.txt"), "a", buffering=1)
            self.jsonl = open(os.path.join(log_dir, "metrics.jsonl"), "a", buffering=1)

    def print(self, message):
        if self.enabled:
            print(message, flush=True)
            self.text.write(message + "\n")

    def metrics(self, **record):
        if self.enabled:
            self.jsonl.write(json.dumps(record) + "\n")

    def train(self, step, end_step, loss, lr, grad_norm, dt, tokens_per_s, mfu):
        """One optimizer step, with the time since this process started and the time left."""
        self.recent.append(dt)
        eta = sum(self.recent) / len(self.recent) * (end_step - step - 1)
        self.print(f"step {step:5d}/{end_step} | loss {loss:.6f} | lr {lr:.4e} | norm {grad_norm:.4f}"
                   f" | {dt * 1000:.1f} ms | {tokens_per_s:,.0f} tok/s"
                   + (f" | MFU {100 * mfu:.1f}%" if mfu else "")
                   + f" | {duration(time.perf_counter() - self.started)} elapsed, ETA {duration(eta)}")
        self.metrics(step=step, kind="train", loss=loss, lr=lr, grad_norm=grad_norm, dt=dt,
                     tokens_per_s=tokens_per_s, mfu=mfu)

    def val(self, step, loss, bits_per_byte):
        self.print(f"step {step:5d} | val loss {loss:.4f} nats/token"
                   + (f" | {bits_per_byte:.4f} bits/byte" if bits_per_byte else ""))
        self.metrics(step=step, kind="val", loss=loss, bits_per_byte=bits_per_byte)

    def hellaswag(self, step, counts):
        """counts: hellaswag_scoring.evaluate's, over all ranks."""
        total = counts["total"]
        acc, acc_norm = counts["correct"] / total, counts["correct_norm"] / total
        self.print(f"step {step:5d} | HellaSwag acc_norm {acc_norm:.4f} (acc {acc:.4f}, {total} examples)")
        self.metrics(step=step, kind="hellaswag", acc=acc, acc_norm=acc_norm, total=total)

    def sample(self, step, i, text):
        self.print(f"step {step:5d} | sample {i}: {text!r}")
        self.metrics(step=step, kind="sample", text=text)

    def close(self):
        if self.enabled:
            self.text.close()
            self.jsonl.close()


def read_metrics(log_dir):
    """{kind: {step: record}} from log_dir/metrics.jsonl, a later line winning over an earlier one
    of the same step (a resumed run repeats the steps after its checkpoint). The last line may be
    half-written while a run is still going: it is skipped."""
    path = os.path.join(log_dir, "metrics.jsonl")
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise UserError(f"{path}: cannot read it ({e.strerror or e})") from None
    runs = {}
    for lineno, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
            kind, step = record["kind"], record["step"]
        except (ValueError, KeyError, TypeError):
            if lineno == len(lines):
                break  # being written right now
            raise UserError(f"{path}:{lineno}: not a metrics record") from None
        runs.setdefault(kind, {})[step] = record
    return {kind: dict(sorted(by_step.items())) for kind, by_step in runs.items()}


def logged_steps(log_dir, kind):
    """The steps metrics.jsonl has a `kind` record of (none when there is no file yet)."""
    if not os.path.exists(os.path.join(log_dir, "metrics.jsonl")):
        return set()
    return set(read_metrics(log_dir).get(kind, {}))
