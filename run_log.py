"""What a training run reports: lines on stdout and in log_dir/log.txt, and records in
log_dir/metrics.jsonl, one JSON object per line whose `kind` is train, val, hellaswag or sample
(after a resume a step may appear twice: the later line wins). Only rank 0 writes.
"""
import json
import os


class RunLog:
    def __init__(self, log_dir, enabled):
        self.enabled = enabled
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

    def train(self, step, loss, lr, grad_norm, dt, tokens_per_s, mfu):
        self.print(f"step {step:5d} | loss {loss:.6f} | lr {lr:.4e} | norm {grad_norm:.4f}"
                   f" | {dt * 1000:.1f} ms | {tokens_per_s:,.0f} tok/s"
                   + (f" | MFU {100 * mfu:.1f}%" if mfu else ""))
        self.metrics(step=step, kind="train", loss=loss, lr=lr, grad_norm=grad_norm, dt=dt,
                     tokens_per_s=tokens_per_s, mfu=mfu)

    def val(self, step, loss, bits_per_byte):
        self.print(f"step {step:5d} | val loss {loss:.4f} nats/token"
                   + (f" | {bits_per_byte:.4f} bits/byte" if bits_per_byte else ""))
        self.metrics(step=step, kind="val", loss=loss, bits_per_byte=bits_per_byte)

    def hellaswag(self, step, counts):
        """counts: hellaswag.evaluate's, over all ranks."""
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
