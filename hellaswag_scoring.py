"""HellaSwag's data and scoring, for hellaswag.py and the trainer: exact, batched, over ranks.

HellaSwag (Zellers et al. 2019, https://github.com/rowanz/hellaswag) gives a context and 4
possible endings; one is right. A language model "answers" by scoring each ending with its own
loss: the ending it finds most likely (lowest cross-entropy) is its pick. Two accuracies:

  acc      : pick = argmin of the *summed* loss over the ending's tokens
  acc_norm : pick = argmin of the *mean* loss per ending token (length-normalised; the number
             quoted for GPT-2: about 29.5% for the 124M model, 33.7% for GPT-3 Small)

These are the definitions build-nanogpt-style evaluators use. Only the ending tokens are scored,
each predicted from everything before it (context + earlier ending tokens).

The command line is hellaswag.py. The trainer loads the examples with `examples_for_training`
and calls `evaluate(model, examples, tokenizer, device, rank, world_size)` on every rank; the
counts it returns cover all ranks.
"""
import contextlib
import json
import os
import shutil
import sys
import urllib.error
import urllib.request

import torch
import torch.distributed as dist

import files
from chunked_loss import IGNORE
from errors import UserError, json_error


# ----------------------------------------------------------------------------------------------
# Data: the official jsonl files, downloaded once into a cache folder

# The dataset's own repository serves the files; one JSON object per line.
DATA_URL = "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_{split}.jsonl"
SPLITS = ("train", "val", "test")  # test has no public labels, so it cannot be scored here
NUM_ENDINGS = 4                    # every HellaSwag example has exactly 4 candidate endings
DOWNLOAD_TIMEOUT_S = 30            # per network operation; the files are at most ~50 MB


def default_cache_dir():
    """~/.cache/gpt2-repro/hellaswag, or as files.cache_dir says ($GPT2_REPRO_CACHE, $XDG_CACHE_HOME)."""
    return files.cache_dir("hellaswag")


def default_data_path(split="val", cache_dir=None):
    """Where `download(split)` puts (or has put) the split's file."""
    if split not in SPLITS:
        raise ValueError(f"unknown HellaSwag split {split!r} (choose from {', '.join(SPLITS)})")
    return os.path.join(cache_dir or default_cache_dir(), f"hellaswag_{split}.jsonl")


def download(split="val", cache_dir=None):
    """Return the local path of the split's file, downloading it first if it is not cached.

    The download is atomic (files.atomic_write): an interrupted one leaves no partial file that a
    later run would mistake for the dataset."""
    path = default_data_path(split, cache_dir)
    if os.path.exists(path):
        return path
    url = DATA_URL.format(split=split)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, files.atomic_write(path) as f:
            shutil.copyfileobj(response, f)
    except (urllib.error.URLError, OSError) as e:  # URLError/HTTPError/timeouts are OSErrors too
        reason = getattr(e, "reason", None) or e
        raise ValueError(f"could not download {url} ({reason}); pass --data PATH to a local "
                         f"hellaswag_{split}.jsonl") from None
    return path


def validate_example(example, where):
    """Check one parsed example; `where` ("file:line") names it in errors. Returns it unchanged."""
    if not isinstance(example, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(example).__name__}")
    name = f"{where} (example ind={example.get('ind', '?')})"
    ctx, endings, label = example.get("ctx"), example.get("endings"), example.get("label")
    if not isinstance(ctx, str) or not ctx:
        raise ValueError(f"{name}: 'ctx' must be a non-empty string")
    if not isinstance(endings, list) or len(endings) != NUM_ENDINGS or not all(isinstance(e, str) for e in endings):
        if not isinstance(endings, list):
            got = type(endings).__name__
        elif len(endings) != NUM_ENDINGS:
            got = f"{len(endings)} items"
        else:
            got = "an ending of type " + next(type(e).__name__ for e in endings if not isinstance(e, str))
        raise ValueError(f"{name}: 'endings' must be a list of {NUM_ENDINGS} strings (got {got})")
    if label is None:
        raise ValueError(f"{name}: no 'label' (the official test split is unlabelled; use val or train)")
    # bool is a subclass of int in Python; `true` is not a valid label
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < NUM_ENDINGS:
        raise ValueError(f"{name}: 'label' must be an integer in 0..{NUM_ENDINGS - 1} (got {label!r})")
    return example


def load_examples(path):
    """Read and validate a HellaSwag jsonl file -> list of example dicts (blank lines skipped).

    Every error is a ValueError naming the file and line (and the example's `ind`)."""
    examples = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError(f"{where}: not valid UTF-8") from None
            if not line.strip():
                continue
            try:
                example = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: malformed JSON ({json_error(e)})") from None
            examples.append(validate_example(example, where))
    if not examples:
        raise ValueError(f"{path}: no examples")
    return examples


# ----------------------------------------------------------------------------------------------
# Rendering: one example -> 4 token rows (context + ending), a mask of the ending tokens, label

def render_example(example, tokenizer, max_len=None):
    """-> (tokens (4, L) long, mask (4, L) long, label int).

    Row i is context tokens followed by ending i's tokens, right-padded with 0 to the longest
    row; mask is 1 exactly on ending i's tokens. The ending is encoded with a leading space
    (" " + ending), as it would appear after the context in running text; GPT-2's BPE merges
    that space into the ending's first token, so context and ending tokenize independently.

    max_len: the longest row the model can read. A row longer than that loses tokens from the
    *left* of the context (the ending must stay whole, and the nearest context matters most);
    all 4 rows keep the same context. HellaSwag rows are < 200 GPT-2 tokens, so with
    block_size 1024 this never happens; it matters only for models with tiny block sizes."""
    ctx_tokens = tokenizer.encode_ordinary(example["ctx"])
    end_tokens = [tokenizer.encode_ordinary(" " + ending) for ending in example["endings"]]
    if max_len is not None:
        longest_ending = max(len(t) for t in end_tokens)
        if longest_ending + 1 > max_len:  # at least one context token must predict the ending's first
            raise UserError(f"example ind={example.get('ind', '?')}: an ending of {longest_ending} tokens "
                             f"does not fit the model's context of {max_len - 1} tokens")
        ctx_tokens = ctx_tokens[max(0, len(ctx_tokens) + longest_ending - max_len):]
    length = len(ctx_tokens) + max(len(t) for t in end_tokens)
    tokens = torch.zeros((NUM_ENDINGS, length), dtype=torch.long)
    mask = torch.zeros((NUM_ENDINGS, length), dtype=torch.long)
    for i, ending in enumerate(end_tokens):
        row = ctx_tokens + ending
        tokens[i, :len(row)] = torch.tensor(row)
        mask[i, len(ctx_tokens):len(row)] = 1
    return tokens, mask, example["label"]


# ----------------------------------------------------------------------------------------------
# Scoring: many examples per forward pass

def model_block_size(model):
    """The model's context length (config.block_size), looking through DDP/compile wrappers;
    None if the model does not say (then rows are never truncated)."""
    for m in (model, getattr(model, "module", None), getattr(model, "_orig_mod", None)):
        block_size = getattr(getattr(m, "config", None), "block_size", None)
        if block_size is not None:
            return block_size
    return None


def autocast_for(device, amp_dtype=None):
    """Mixed precision as the trainer runs it (its --dtype); None or float32 is exact fp32."""
    if amp_dtype in (None, torch.float32):
        return contextlib.nullcontext()
    return torch.autocast(device_type=str(device).split(":")[0], dtype=amp_dtype)


def check_endings_fit(examples, tokenizer, block_size):
    """Raise render_example's error for an ending longer than the model's context now, before a
    run starts (and on every rank alike), rather than at its first evaluation. A token holds at
    least one byte, so only an ending longer than the context in bytes needs tokenizing: with
    GPT-2's 1024 positions, none does."""
    for example in examples:
        if max(len((" " + ending).encode("utf-8")) for ending in example["endings"]) > block_size:
            render_example(example, tokenizer, block_size + 1)


@torch.no_grad()
def score_batch(model, rendered, device, amp_dtype=None):
    """Loss of every ending of a list of rendered examples in ONE forward pass.

    rendered: [(tokens (4, L_i), mask (4, L_i), label), ...]. Returns (sum_loss, mean_loss), both
    (len(rendered), 4) float32 on the CPU. All 4*B rows are right-padded to the longest row: the
    model is causal, so padding after a row's last token cannot change the logits before it, and
    the mask excludes padding from the loss. The model is called as model(inputs, targets,
    reduction="none") -> (_, per-token losses), targets being IGNORE where nothing is scored."""
    rows = NUM_ENDINGS * len(rendered)
    length = max(tokens.size(1) for tokens, _, _ in rendered)
    tokens = torch.zeros((rows, length), dtype=torch.long)
    mask = torch.zeros((rows, length), dtype=torch.bool)
    for b, (t, m, _) in enumerate(rendered):
        tokens[NUM_ENDINGS * b:NUM_ENDINGS * (b + 1), :t.size(1)] = t
        mask[NUM_ENDINGS * b:NUM_ENDINGS * (b + 1), :m.size(1)] = m.bool()
    # Position p's logits predict token p+1, so the last token is never an input, and only the
    # predictions of ending tokens are scored: the model's own chunked loss (chunked_loss.py) makes
    # logits for just those, in float32, and gives each a loss (0 for the IGNOREd rest).
    targets = torch.where(mask[:, 1:], tokens[:, 1:], IGNORE)
    n_scored = mask[:, 1:].sum(dim=1)
    with autocast_for(device, amp_dtype):
        _, token_loss = model(tokens[:, :-1].to(device), targets.to(device), reduction="none")
    sum_loss = token_loss.sum(dim=1).cpu()
    mean_loss = sum_loss / n_scored
    return sum_loss.view(-1, NUM_ENDINGS), mean_loss.view(-1, NUM_ENDINGS)


# Examples per forward pass (4 rows each) unless a caller says otherwise. A GPU needs many rows
# in flight to be busy. A CPU does not: it is as busy with one example's matmuls, and 16 examples
# per pass scored 0.8x as fast as 1 (python -m bench.hellaswag_speed --memory: 24.7 against 29.4
# examples/s, peak 439 MB against 382 MB; only the ending tokens get logits, see score_batch).
CPU_BATCH_SIZE = 1
GPU_BATCH_SIZE = 16


def default_batch_size(device):
    """How many examples evaluate() scores per forward pass on `device` (a str or torch.device)."""
    return CPU_BATCH_SIZE if torch.device(device).type == "cpu" else GPU_BATCH_SIZE


def evaluate(model, examples, tokenizer, device, rank=0, world_size=1, batch_size=None, progress=False,
             amp_dtype=None):
    """Score this rank's share of the examples (examples[rank::world_size]).

    Returns {"total", "correct", "correct_norm"} counts of the whole set (acc = correct/total,
    acc_norm = correct_norm/total): under torch.distributed the ranks' counts are summed, so
    every rank must call this with the same examples. The model is put in eval
    mode for the duration and its previous mode restored, so the trainer can call this mid-run.
    Examples are scored in order of length so each batch pads little; the counts do not depend
    on order. batch_size: examples per forward pass, by default default_batch_size(device)."""
    if batch_size is None:
        batch_size = default_batch_size(device)
    share = examples[rank::world_size]
    max_len = model_block_size(model)
    max_len = None if max_len is None else max_len + 1  # the input is the row minus its last token
    rendered = [render_example(example, tokenizer, max_len) for example in share]
    order = sorted(range(len(rendered)), key=lambda i: rendered[i][0].size(1))
    counts = {"total": 0, "correct": 0, "correct_norm": 0}
    was_training = model.training
    model.eval()
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(rendered), unit="ex", desc="hellaswag", file=sys.stderr)
    try:
        for start in range(0, len(order), batch_size):
            batch = [rendered[i] for i in order[start:start + batch_size]]
            sum_loss, mean_loss = score_batch(model, batch, device, amp_dtype)
            labels = torch.tensor([label for _, _, label in batch])
            counts["total"] += len(batch)
            counts["correct"] += int((sum_loss.argmin(dim=1) == labels).sum())
            counts["correct_norm"] += int((mean_loss.argmin(dim=1) == labels).sum())
            if bar is not None:
                bar.update(len(batch))
                bar.set_postfix(acc_norm=f"{counts['correct_norm'] / counts['total']:.4f}")
    finally:
        model.train(was_training)
        if bar is not None:
            bar.close()
    if world_size > 1 and dist.is_initialized():
        summed = torch.tensor([counts[k] for k in counts], device=device)
        dist.all_reduce(summed, op=dist.ReduceOp.SUM)
        counts = dict(zip(counts, summed.tolist()))
    return counts


def examples_for_training(path, tokenizer, block_size, say):
    """The examples the trainer scores at every evaluation, or None when the file is absent (said
    through `say`). Every example is checked now, alike on every rank, so that a bad file is a
    one-line error before training rather than a crash, or a DDP hang, at the first evaluation."""
    path = path or default_data_path("val")
    if not os.path.exists(path):
        say(f"HellaSwag skipped: {path} not found (download it with hellaswag.py)")
        return None
    try:
        examples = load_examples(path)
        check_endings_fit(examples, tokenizer, block_size)
    except (ValueError, OSError) as e:  # load_examples names the file and line, or the example
        raise UserError(str(e) if path in str(e) else f"{path}: {e}") from None
    return examples


# ----------------------------------------------------------------------------------------------
# Command line
