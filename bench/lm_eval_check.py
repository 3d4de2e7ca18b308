"""Check that lm-evaluation-harness scores HellaSwag as hellaswag.py does: same acc, acc_norm explained.

    pip install "lm-eval[hf]"
    python -m bench.lm_eval_check                        # 200 synthetic examples, a random GPT
    python -m bench.lm_eval_check --tokenizer my.model   # the same with a bpe.py vocabulary
    python -m bench.lm_eval_check --model log/hf --data hellaswag_val.jsonl --examples 1000
    python -m bench.lm_eval_check --write-task lm_eval_tasks --data hellaswag_val.jsonl  # for `lm_eval`

Both tools score a HellaSwag example alike: the log-likelihood of each ending (with a leading
space) after the context, summed over the ending's tokens. acc picks the largest sum in both.
acc_norm divides it first: hellaswag.py by the ending's number of TOKENS, lm-eval by its number of
CHARACTERS (its acc_bytes by UTF-8 bytes), so the two acc_norm differ. The check shows it: lm-eval's
own log-likelihoods divided per token give hellaswag.py's acc_norm exactly. Only an example longer
than the model's context is scored differently (hellaswag.py cuts the context of all four rows
alike, lm-eval each row on its own): the check counts those apart.

Steps: a Hugging Face directory with its tokenizer (a random train_gpt2.GPT exported with
save_pretrained + hf_gpt2.save_tokenizer, or --model DIR), the examples as a jsonl file, the
lm-eval task YAML over that file (task_yaml: the one --write-task writes), then
lm_eval.simple_evaluate(model="hf") and hellaswag_scoring.evaluate (our GPT loaded from the same
directory) on the same examples. The task reads the jsonl's raw `ctx` and `endings`, as hellaswag.py
does; lm-eval's built-in `hellaswag` task instead downloads the dataset from the Hub and rewrites
the text (ctx_a + capitalised ctx_b, bracketed markers removed), so its figures differ a little.
"""
import argparse
import importlib.util
import json
import os
import tempfile

import torch

import bpe
import files
import hellaswag_scoring
import hf_gpt2
import train_gpt2
from bench.hellaswag_speed import synthetic_examples
from errors import fail

TASK = "hellaswag_local"  # the task's name in lm-eval: `--tasks hellaswag_local`
# How to run the task a --write-task DIR holds (on a GPU: --device cuda:0 and a larger batch).
LM_EVAL_COMMAND = ("lm_eval --model hf --model_args pretrained=log/hf --include_path {task_dir} "
                   f"--tasks {TASK} --device cpu --batch_size 16")
# A small random model (it need not know anything: both tools must pick the same endings) with a
# context long enough for HellaSwag rows (< 200 GPT-2 tokens), so neither tool truncates.
SHAPE = dict(n_layer=2, n_head=2, n_embd=32, block_size=1024)
# The two tools' log-likelihoods of an ending agree to float32 rounding (~1e-5 nats over dozens of
# tokens); more than this, for an example that fits the model's context, means they scored
# different tokens or a different model.
SAME_LOGLIK_NATS = 1e-3


def task_yaml(data_path):
    """lm-eval's task definition for a HellaSwag-format jsonl file (ctx, endings, label).

    Multiple choice: lm-eval scores each of doc_to_choice's strings as a continuation of
    doc_to_text, joined by its default target_delimiter " " (hellaswag.py's leading space)."""
    path = json.dumps(os.path.abspath(os.path.expanduser(data_path)))  # a JSON string is a YAML string
    return f"""# lm-eval task: HellaSwag-format examples from a local jsonl file, scored as hellaswag.py scores them.
# Written by `python -m bench.lm_eval_check --write-task DIR --data FILE`; use it with
#   {LM_EVAL_COMMAND.format(task_dir="DIR")}
task: {TASK}
dataset_path: json
dataset_kwargs:
  data_files:
    validation: {path}
validation_split: validation
output_type: multiple_choice
doc_to_text: "{{{{ctx}}}}"
doc_to_choice: "{{{{endings}}}}"
doc_to_target: "{{{{label}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
"""


def write_task(directory, data_path):
    """DIR/hellaswag_local.yaml for `lm_eval --include_path DIR --tasks hellaswag_local`."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"{TASK}.yaml")
    with files.atomic_write(path, "w") as f:
        f.write(task_yaml(data_path))
    return path


def export_random_model(directory, tokenizer, seed=0):
    """A random train_gpt2.GPT with the tokenizer's vocabulary, saved as the trainer saves log/hf/."""
    torch.manual_seed(seed)
    model = train_gpt2.GPT(train_gpt2.GPTConfig(vocab_size=tokenizer.vocab_size, **SHAPE))
    model.save_pretrained(directory, tokenizer)


def run_lm_eval(hf_dir, task_dir, batch_size):
    """lm-eval's (acc, acc_norm) and its per-example log-likelihoods [[ll of each ending], ...]."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    results = lm_eval.simple_evaluate(
        model="hf", model_args={"pretrained": hf_dir, "dtype": "float32"}, device="cpu",
        tasks=[TASK], task_manager=TaskManager(include_path=task_dir, include_defaults=False),
        batch_size=batch_size, log_samples=True,
        bootstrap_iters=0)  # no bootstrap standard errors: they take longer than the scoring
    metrics = results["results"][TASK]
    samples = sorted(results["samples"][TASK], key=lambda sample: sample["doc_id"])
    logliks = [[ll for ll, _is_greedy in sample["filtered_resps"]] for sample in samples]
    return metrics["acc,none"], metrics["acc_norm,none"], logliks


def argmax(values):
    return values.index(max(values))  # the first of equals, as numpy's argmax (lm-eval's)


def check(hf_dir, examples, tokenizer, batch_size=16, log=print):
    """Score the examples with both tools; log the figures; return them as a dict."""
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "examples.jsonl")
        with open(data, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(example) + "\n" for example in examples)
        write_task(tmp, data)
        lm_acc, lm_acc_norm, logliks = run_lm_eval(hf_dir, tmp, batch_size)
    model = train_gpt2.GPT.from_pretrained(hf_dir).eval()
    counts = hellaswag_scoring.evaluate(model, examples, tokenizer, "cpu", batch_size=batch_size)
    # The same log-likelihoods from our side (ll = -loss), and each ending's token count (its mask's sum).
    max_len = model.config.block_size + 1  # a row of context + ending, its last token not an input
    rendered = [hellaswag_scoring.render_example(example, tokenizer, max_len) for example in examples]
    ours = torch.cat([hellaswag_scoring.score_batch(model, rendered[i:i + batch_size], "cpu")[0]
                      for i in range(0, len(rendered), batch_size)])
    difference = (torch.tensor(logliks) + ours).abs().max(dim=1).values
    n_tokens = [mask.sum(dim=1).tolist() for _, mask, _ in rendered]
    # An example longer than the context is cut differently: hellaswag.py drops the same context
    # tokens from all four rows (enough for the longest ending), lm-eval cuts each row on its own.
    cut = torch.tensor([hellaswag_scoring.render_example(example, tokenizer)[0].size(1) > max_len for example in examples])
    labels = [example["label"] for example in examples]
    n = len(examples)
    figures = {
        "examples": n, "cut_examples": int(cut.sum()),
        "hellaswag_acc": counts["correct"] / n, "hellaswag_acc_norm": counts["correct_norm"] / n,
        "lm_eval_acc": lm_acc, "lm_eval_acc_norm": lm_acc_norm,
        # lm-eval's log-likelihoods normalised per token, as hellaswag.py normalises
        "lm_eval_per_token_acc_norm": sum(argmax([ll / k for ll, k in zip(lls, ks)]) == label
                                          for lls, ks, label in zip(logliks, n_tokens, labels)) / n,
        "max_loglik_difference": float(difference[~cut].max()) if (~cut).any() else 0.0,
        "max_loglik_difference_cut": float(difference[cut].max()) if cut.any() else 0.0,
    }
    figures["acc_equal"] = figures["lm_eval_acc"] == figures["hellaswag_acc"]
    figures["per_token_acc_norm_equal"] = figures["lm_eval_per_token_acc_norm"] == figures["hellaswag_acc_norm"]
    log(f"{n} examples, model {hf_dir}, tokenizer {tokenizer.spec}")
    log(f"  hellaswag.py: acc {figures['hellaswag_acc']:.4f}  acc_norm {figures['hellaswag_acc_norm']:.4f}"
        f" (per token)")
    log(f"  lm-eval:      acc {figures['lm_eval_acc']:.4f}  acc_norm {figures['lm_eval_acc_norm']:.4f}"
        f" (per character)")
    log(f"  lm-eval's log-likelihoods normalised per token: acc_norm {figures['lm_eval_per_token_acc_norm']:.4f}")
    log(f"  largest difference between the two tools' log-likelihood of an ending: "
        f"{figures['max_loglik_difference']:.2e} nats")
    if figures["cut_examples"]:
        log(f"  {figures['cut_examples']} examples are longer than the model's {model.config.block_size}-token "
            f"context and cut (hellaswag.py: all four rows alike, lm-eval: each row on its own): "
            f"their log-likelihoods differ by up to {figures['max_loglik_difference_cut']:.2f} nats")
    log(f"  acc equal: {'yes' if figures['acc_equal'] else 'NO'}; per-token acc_norm equal: "
        f"{'yes' if figures['per_token_acc_norm_equal'] else 'NO'}")
    return figures


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.lm_eval_check", description=__doc__.split("\n")[0])
    p.add_argument("--model", help="a Hugging Face directory with tokenizer files, e.g. log/hf "
                                   "(default: a random GPT, exported to a temporary directory)")
    p.add_argument("--tokenizer", default="gpt2", help="the model's tokenizer: gpt2 or a bpe.py .model file")
    p.add_argument("--data", help="a HellaSwag jsonl file (default: synthetic examples)")
    p.add_argument("--examples", type=int, default=200, help="score the first N examples (default 200)")
    p.add_argument("--batch-size", type=int, default=16, help="examples (hellaswag.py), requests (lm-eval)")
    p.add_argument("--write-task", metavar="DIR", help="only write DIR/hellaswag_local.yaml over --data for the "
                                                      "lm_eval command line, and print that command")
    args = p.parse_args(argv)
    if args.examples < 1 or args.batch_size < 1:
        p.error("--examples and --batch-size must be at least 1")
    try:
        if args.write_task:
            if not args.data:
                raise ValueError("--write-task needs --data FILE: the jsonl file the task reads")
            hellaswag_scoring.load_examples(args.data)  # a missing or malformed file: an error now, not in lm_eval
            path = write_task(args.write_task, args.data)
            print(f"wrote {path}; run:\n  {LM_EVAL_COMMAND.format(task_dir=args.write_task)}")
            return path
        if importlib.util.find_spec("lm_eval") is None:  # say so now, before any work
            raise ValueError('lm-eval is not installed: pip install "lm-eval[hf]"')
        examples = hellaswag_scoring.load_examples(args.data) if args.data else synthetic_examples(args.examples)
        examples = examples[:args.examples]
        bpe.offline_tiktoken_cache()  # GPT-2's vocabulary without a network (as the tests do)
        tokenizer = bpe.load_tokenizer(args.tokenizer, flag="--tokenizer")
        if args.model:
            hf_gpt2.read_config(args.model)  # a one-line error now, not a traceback inside lm-eval
            if not any(os.path.exists(os.path.join(args.model, name))
                       for name in (hf_gpt2.BPE_TOKENIZER_FILE, *hf_gpt2.GPT2_TOKENIZER_FILES)):
                raise ValueError(f"{args.model}: no tokenizer files (hf_gpt2.save_tokenizer writes them)")
        with tempfile.TemporaryDirectory() as tmp:
            hf_dir = args.model or os.path.join(tmp, "hf")
            if not args.model:
                export_random_model(hf_dir, tokenizer)
            figures = check(hf_dir, examples, tokenizer, args.batch_size)
    except (ValueError, OSError) as e:
        raise fail("bench.lm_eval_check", e) from None
    if figures["max_loglik_difference"] > SAME_LOGLIK_NATS:
        raise SystemExit("bench.lm_eval_check: error: lm-eval and hellaswag.py score the endings of "
                         "examples that fit the context differently")
    return figures


if __name__ == "__main__":
    main()
