"""Tests for hellaswag.py: loader/validation, rendering, exact batched scoring, ranks, download.

Examples are synthetic but written in exactly the official jsonl format (the real val file,
10,042 examples, cannot be downloaded here). Models are small nn.Modules following the model
interface (see LogitsModel) with GPT-2's vocabulary size.
"""
import json
import os
import random
import urllib.request

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import bpe
import hellaswag
import hellaswag_scoring
from chunked_loss import IGNORE

VOCAB = 50257  # GPT-2's; the tokenizer below emits ids up to 50256

# The first example of the official hellaswag_val.jsonl, verbatim (all fields, official order).
OFFICIAL_FIRST = {
    "ind": 24, "activity_label": "Roof shingle removal", "ctx_a": "A man is sitting on a roof.",
    "ctx_b": "he", "ctx": "A man is sitting on a roof. he", "split": "val", "split_type": "indomain",
    "label": 3, "endings": ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.",
                            "is holding a rubik's cube.", "starts pulling up roofing on a roof."],
    "source_id": "activitynet~v_-JhWjGDPHMY",
}

WORDS = ("the man woman dog café naïve Zürich 日本語 smiles 🙂 rolls ball across floor into "
         "kitchen then grabs rope — garçon façade jalapeño Ærø über straße 'quoted' \"double\" "
         "wax ski board paint fence slowly quickly and it is her his").split()


def synthetic_example(ind, rng, ctx_words=(8, 40), long=False):
    """One example in the official format; endings are distinct, period-terminated sentences
    whose first words differ, so no ending's tokens are a prefix of another's."""
    ctx_a = " ".join(rng.choice(WORDS) for _ in range(rng.randint(*ctx_words) * (60 if long else 1))) + "."
    ctx_b = f"example {ind} " + rng.choice(WORDS)  # the ind makes every context unique
    firsts = rng.sample(["is", "starts", "then", "grabs", "rolls", "smiles"], 4)
    endings = [f + " " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 14))) + "." for f in firsts]
    return {"ind": ind, "activity_label": rng.choice(["Roof shingle removal", "Café work", "Skiing"]),
            "ctx_a": ctx_a, "ctx_b": ctx_b, "ctx": ctx_a + " " + ctx_b, "split": "val",
            "split_type": rng.choice(["indomain", "zeroshot"]), "label": rng.randrange(4),
            "endings": endings, "source_id": f"activitynet~v_{ind:08d}"}


def write_jsonl(path, examples, ensure_ascii=False):
    with open(path, "w", encoding="utf-8") as f:
        for ex in examples:
            f.write(json.dumps(ex, ensure_ascii=ensure_ascii) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def tok():
    return bpe.load_tokenizer("gpt2")


@pytest.fixture(scope="module")
def examples():
    rng = random.Random(0)
    return [OFFICIAL_FIRST] + [synthetic_example(i, rng) for i in range(1, 23)]


# ----------------------------------------------------------------------------------------------
# Models following train_gpt2.GPT's interface

class LogitsModel(nn.Module):
    """model(idx) -> (logits, None); model(idx, targets, reduction="none") -> (None, each token's
    cross-entropy, 0 where the target is IGNORE), from a subclass's logits(idx)."""

    def forward(self, idx, targets=None, reduction="mean"):
        logits = self.logits(idx)
        if targets is None:
            return logits, None
        losses = F.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=IGNORE,
                                 reduction="none")
        return None, losses if reduction == "none" else losses.sum() / (targets != IGNORE).sum()


class RiggedModel(LogitsModel):
    """Puts a logit of +100 on the next token of any of `rows` (token lists) whose prefix the
    input matches; 0 elsewhere. Rows = context + the labelled ending -> it prefers the labelled
    ending; rows = context + each wrong ending -> it prefers the wrong ones."""

    def __init__(self, rows):
        super().__init__()
        self.next_tokens = {}
        for row in rows:
            for t in range(1, len(row)):
                self.next_tokens.setdefault(tuple(row[:t]), set()).add(row[t])
        self.dummy = nn.Parameter(torch.zeros(()))  # so .eval()/.train()/.to() behave like a model

    def logits(self, idx):
        logits = torch.zeros(idx.size(0), idx.size(1), VOCAB)
        for b, row in enumerate(idx.tolist()):
            for t in range(len(row)):
                for nxt in self.next_tokens.get(tuple(row[:t + 1]), ()):
                    logits[b, t, nxt] = 100.0
        return logits


def rigged(examples, tok, for_label):
    rows = []
    for ex in examples:
        ctx = tok.encode_ordinary(ex["ctx"])
        for i, ending in enumerate(ex["endings"]):
            if (i == ex["label"]) == for_label:
                rows.append(ctx + tok.encode_ordinary(" " + ending))
    return RiggedModel(rows)


class FoldedTokenizer:
    """GPT-2's tokens folded into SMALL_VOCAB ids, for the random-model tests: the logits are
    (rows, T, vocab), so a small vocabulary makes those tests ~50x cheaper. Scoring does not care
    what the ids mean; the real vocabulary is used by the rendering, rigged-model and GPT tests."""

    def __init__(self, tok):
        self.tok = tok

    def encode_ordinary(self, text):
        return [t % SMALL_VOCAB for t in self.tok.encode_ordinary(text)]


SMALL_VOCAB = 1000


class TinyCausalLM(LogitsModel):
    """A random one-block causal transformer: enough to make padding/batching bugs visible."""

    def __init__(self, d=32, block_size=None, seed=0, vocab=SMALL_VOCAB):
        super().__init__()
        torch.manual_seed(seed)
        self.config = type("Config", (), {"block_size": block_size})()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(512, d)
        self.ln1, self.ln2, self.ln_f = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.head = nn.Linear(d, vocab, bias=False)
        self.drop = nn.Dropout(0.5)  # must be off during evaluation (evaluate() calls .eval())
        self.seen_lengths = []

    def logits(self, idx):
        B, T = idx.shape
        self.seen_lengths.append(T)
        if self.config.block_size is not None:
            assert T <= self.config.block_size, f"input of {T} tokens > block_size {self.config.block_size}"
        x = self.wte(idx) + self.wpe(torch.arange(T))
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, 4, -1).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, -1)
        x = x + self.drop(self.proj(att))
        x = x + self.mlp(self.ln2(x))
        return self.head(self.ln_f(x))


# ----------------------------------------------------------------------------------------------
# Loading and validation

def test_loader_reads_official_format_unicode_long_contexts_many_examples(tmp_path, tok):
    rng = random.Random(1)
    exs = [OFFICIAL_FIRST] + [synthetic_example(i, rng, long=(i % 100 == 7)) for i in range(1, 1200)]
    assert max(len(e["ctx"]) for e in exs) > 5000  # some contexts are thousands of characters
    path = tmp_path / "hellaswag_val.jsonl"
    with open(path, "w", encoding="utf-8") as f:  # both styles: raw UTF-8 and \u escapes
        for i, ex in enumerate(exs):
            f.write(json.dumps(ex, ensure_ascii=(i % 2 == 0)) + "\n")
        f.write("\n")  # a trailing blank line is not an example
    loaded = hellaswag_scoring.load_examples(str(path))
    assert loaded == exs
    assert list(loaded[0]) == ["ind", "activity_label", "ctx_a", "ctx_b", "ctx", "split",
                               "split_type", "label", "endings", "source_id"]
    assert any("日本語" in e["ctx"] for e in loaded) and any("🙂" in " ".join(e["endings"]) for e in loaded)


def _bad_file(tmp_path, examples, bad_line_3):
    lines = [json.dumps(e) for e in examples[:4]]
    lines[2] = bad_line_3
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def test_malformed_json_line_names_file_and_line(tmp_path, examples):
    path = _bad_file(tmp_path, examples, '{"ind": 5, "ctx": "unterminated')
    with pytest.raises(ValueError, match=rf"^{path}:3: malformed JSON \(Invalid control character at column 32\)$"):
        hellaswag_scoring.load_examples(path)  # (json's message ends in " at": once it read "at at column")
    path = _bad_file(tmp_path, examples, "[1, 2, 3]")
    with pytest.raises(ValueError, match=rf"^{path}:3: expected a JSON object"):
        hellaswag_scoring.load_examples(path)


def test_not_utf8_names_line(tmp_path, examples):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(json.dumps(examples[0]).encode() + b"\n" + '{"ctx": "caf\xe9"}\n'.encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.jsonl:2: not valid UTF-8"):
        hellaswag_scoring.load_examples(str(path))


@pytest.mark.parametrize("change, message", [
    ({"endings": ["a", "b", "c"]}, r"'endings' must be a list of 4 strings \(got 3 items\)"),
    ({"endings": ["a", "b", "c", "d", "e"]}, r"'endings' must be a list of 4 strings \(got 5 items\)"),
    ({"endings": ["a", "b", "c", 4]}, r"'endings' must be a list of 4 strings \(got an ending of type int\)"),
    ({"endings": "abcd"}, r"'endings' must be a list of 4 strings \(got str\)"),
    ({"label": 4}, r"'label' must be an integer in 0..3 \(got 4\)"),
    ({"label": -1}, r"'label' must be an integer in 0..3 \(got -1\)"),
    ({"label": "2"}, r"'label' must be an integer in 0..3 \(got '2'\)"),
    ({"label": True}, r"'label' must be an integer in 0..3 \(got True\)"),
    ({"label": None}, r"no 'label' \(the official test split is unlabelled"),
    ({"ctx": ""}, r"'ctx' must be a non-empty string"),
])
def test_bad_example_names_the_example(tmp_path, examples, change, message):
    bad = dict(examples[5], ind=4242, **change)
    path = _bad_file(tmp_path, examples, json.dumps(bad))
    with pytest.raises(ValueError, match=rf"^{path}:3 \(example ind=4242\): {message}"):
        hellaswag_scoring.load_examples(path)


def test_empty_or_missing_file(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="empty.jsonl: no examples"):
        hellaswag_scoring.load_examples(str(tmp_path / "empty.jsonl"))
    with pytest.raises(FileNotFoundError):
        hellaswag_scoring.load_examples(str(tmp_path / "nope.jsonl"))


# ----------------------------------------------------------------------------------------------
# Rendering

def test_mask_covers_exactly_the_ending_tokens(examples, tok):
    for ex in examples:
        tokens, mask, label = hellaswag_scoring.render_example(ex, tok)
        ctx = tok.encode_ordinary(ex["ctx"])
        ends = [tok.encode_ordinary(" " + e) for e in ex["endings"]]
        assert label == ex["label"]
        assert tokens.shape == mask.shape == (4, len(ctx) + max(map(len, ends)))
        assert set(mask.unique().tolist()) <= {0, 1}
        for i, end in enumerate(ends):
            n = len(ctx) + len(end)
            assert tokens[i, :n].tolist() == ctx + end
            assert tokens[i][mask[i] == 1].tolist() == end            # the ending, all of it
            assert mask[i, :len(ctx)].sum() == 0 and mask[i, len(ctx):n].all()  # nothing else
            assert mask[i, n:].sum() == 0 and tokens[i, n:].sum() == 0          # padding: zeros, unmasked
            assert tok.decode(ctx + end) == ex["ctx"] + " " + ex["endings"][i]  # lossless text
    # the ending's leading space belongs to its first token, as in running text
    tokens, mask, _ = hellaswag_scoring.render_example(OFFICIAL_FIRST, tok)
    assert tok.decode(tokens[3][mask[3] == 1].tolist()) == " starts pulling up roofing on a roof."


def test_render_truncates_context_from_the_left(examples, tok):
    ex = examples[3]
    full_ctx = tok.encode_ordinary(ex["ctx"])
    ends = [tok.encode_ordinary(" " + e) for e in ex["endings"]]
    max_len = max(map(len, ends)) + 5
    tokens, mask, _ = hellaswag_scoring.render_example(ex, tok, max_len=max_len)
    assert tokens.size(1) == max_len
    for i, end in enumerate(ends):
        assert tokens[i][mask[i] == 1].tolist() == end                      # ending intact
        assert tokens[i, :5].tolist() == full_ctx[-5:] and mask[i, :5].sum() == 0  # newest context kept
    longest = max(map(len, ends))
    with pytest.raises(ValueError, match=rf"example ind=\d+: an ending of {longest} tokens does not fit the "
                                         rf"model's context of {longest - 1} tokens"):
        hellaswag_scoring.render_example(ex, tok, max_len=longest)  # a row of `longest` = a context of longest - 1
    hellaswag_scoring.check_endings_fit([ex], tok, block_size=longest)  # fits: one context token + the ending
    with pytest.raises(ValueError, match="does not fit"):
        hellaswag_scoring.check_endings_fit(examples, tok, block_size=longest - 1)


# ----------------------------------------------------------------------------------------------
# Scoring

@pytest.mark.parametrize("batch_size", [1, 5])  # 5: the last batch is partial
def test_rigged_models_score_100_and_0_percent(examples, tok, batch_size):
    for_label = hellaswag_scoring.evaluate(rigged(examples, tok, True), examples, tok, "cpu", batch_size=batch_size)
    assert for_label == {"total": len(examples), "correct": len(examples), "correct_norm": len(examples)}
    against = hellaswag_scoring.evaluate(rigged(examples, tok, False), examples, tok, "cpu", batch_size=batch_size)
    assert against == {"total": len(examples), "correct": 0, "correct_norm": 0}


def test_batched_scoring_equals_one_at_a_time(examples, tok):
    model, tok = TinyCausalLM().eval(), FoldedTokenizer(tok)
    rendered = [hellaswag_scoring.render_example(ex, tok) for ex in examples]
    assert len({r[0].size(1) for r in rendered}) > 5  # rows of many lengths -> real padding
    one = [hellaswag_scoring.score_batch(model, [r], "cpu") for r in rendered]
    one_sum, one_mean = torch.cat([s for s, _ in one]), torch.cat([m for _, m in one])
    batch_sum, batch_mean = hellaswag_scoring.score_batch(model, rendered, "cpu")
    torch.testing.assert_close(batch_sum, one_sum, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(batch_mean, one_mean, rtol=1e-5, atol=1e-5)
    # and the numbers are the plain definition: summed/mean cross-entropy of the ending tokens
    tokens, mask, _ = rendered[0]
    logits, _ = model(tokens)
    losses = F.cross_entropy(logits[:, :-1].transpose(1, 2), tokens[:, 1:], reduction="none") * mask[:, 1:]
    torch.testing.assert_close(one_sum[0], losses.sum(1), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(one_mean[0], losses.sum(1) / mask.sum(1), rtol=1e-5, atol=1e-5)
    # evaluate() in batches (sorted by length) counts what one-at-a-time scoring picks
    counts = hellaswag_scoring.evaluate(model, examples, tok, "cpu", batch_size=5)
    labels = torch.tensor([ex["label"] for ex in examples])
    assert counts == {"total": len(examples), "correct": int((one_sum.argmin(1) == labels).sum()),
                      "correct_norm": int((one_mean.argmin(1) == labels).sum())}


def test_split_over_ranks_sums_to_single_process(examples, tok):
    model, folded = TinyCausalLM(seed=1), FoldedTokenizer(tok)
    single = hellaswag_scoring.evaluate(model, examples, folded, "cpu", batch_size=4)
    assert single["total"] == len(examples)
    for world_size in (2, 5):  # 23 examples: uneven shares
        parts = [hellaswag_scoring.evaluate(model, examples, folded, "cpu", rank=r, world_size=world_size, batch_size=4)
                 for r in range(world_size)]
        assert [p["total"] for p in parts] == [len(examples[r::world_size]) for r in range(world_size)]
        assert {k: sum(p[k] for p in parts) for k in single} == single
    # the ranks score disjoint shares: a rig on rank 1's share only scores 100% there
    share = examples[1::2]
    model = rigged(share, tok, True)
    assert hellaswag_scoring.evaluate(model, examples, tok, "cpu", rank=1, world_size=2)["correct"] == len(share)


def test_evaluate_restores_mode_respects_block_size_and_shows_progress(examples, tok, capsys):
    model, tok = TinyCausalLM(block_size=40).train(), FoldedTokenizer(tok)
    counts = hellaswag_scoring.evaluate(model, examples[:6], tok, "cpu", batch_size=2, progress=True)
    assert counts["total"] == 6
    assert model.training  # restored after evaluation
    assert max(model.seen_lengths) == 40  # long contexts were truncated to fit block_size
    assert "hellaswag" in capsys.readouterr().err  # the progress bar (stderr)
    # dropout was off while scoring: the result is deterministic despite p=0.5 in train mode
    again = hellaswag_scoring.evaluate(model, examples[:6], tok, "cpu", batch_size=3)
    assert again == counts


def test_batch_size_follows_the_device(examples, tok, monkeypatch):
    """The trainer calls evaluate() without a batch size: one example per forward pass on a CPU
    (batching is no faster there and its logits cost memory), 16 on a GPU."""
    assert hellaswag_scoring.default_batch_size("cpu") == hellaswag_scoring.default_batch_size(torch.device("cpu")) == 1
    assert hellaswag_scoring.default_batch_size("cuda") == hellaswag_scoring.default_batch_size("cuda:1") == 16
    assert hellaswag_scoring.default_batch_size(torch.device("cuda", 0)) == hellaswag_scoring.default_batch_size("mps") == 16
    model, folded = TinyCausalLM(), FoldedTokenizer(tok)
    counts = hellaswag_scoring.evaluate(model, examples, folded, "cpu")   # as the trainer calls it
    assert len(model.seen_lengths) == len(examples) and counts["total"] == len(examples)
    assert counts == hellaswag_scoring.evaluate(model, examples, folded, "cpu", batch_size=16)   # an explicit size still wins
    assert len(model.seen_lengths) == len(examples) + 2   # 23 examples: 16 + 7
    # On a GPU (none here: the scoring is stood in for), the examples go 16 to a pass.
    batches = []
    monkeypatch.setattr(hellaswag_scoring, "score_batch", lambda model, batch, device, amp_dtype=None: batches.append(
        (len(batch), device)) or (torch.zeros(len(batch), 4), torch.zeros(len(batch), 4)))
    assert hellaswag_scoring.evaluate(model, examples, folded, "cuda:0")["total"] == len(examples)
    assert batches == [(16, "cuda:0"), (7, "cuda:0")]


# ----------------------------------------------------------------------------------------------
# Download and command line

def test_download_into_cache_then_reuse(tmp_path, monkeypatch, examples, capsys):
    source = tmp_path / "server"
    source.mkdir()
    write_jsonl(source / "hellaswag_val.jsonl", examples)
    monkeypatch.setattr(hellaswag_scoring, "DATA_URL", source.as_uri() + "/hellaswag_{split}.jsonl")
    cache = tmp_path / "cache" / "hs"
    path = hellaswag_scoring.download("val", str(cache))
    assert path == hellaswag_scoring.default_data_path("val", str(cache)) == str(cache / "hellaswag_val.jsonl")
    assert hellaswag_scoring.load_examples(path) == examples
    assert os.listdir(cache) == ["hellaswag_val.jsonl"]  # no temp files left behind
    (source / "hellaswag_val.jsonl").unlink()
    assert hellaswag_scoring.download("val", str(cache)) == path  # cached: no second download
    assert hellaswag.main(["--download-only", "--cache-dir", str(cache)]) is None
    assert capsys.readouterr().out == f"{path}: {len(examples)} examples\n"
    with pytest.raises(ValueError, match="unknown HellaSwag split 'dev'"):
        hellaswag_scoring.default_data_path("dev")


def test_download_offline_is_a_clear_error_and_leaves_nothing(tmp_path, monkeypatch):
    assert hellaswag_scoring.DATA_URL == "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_{split}.jsonl"
    monkeypatch.setattr(hellaswag_scoring, "DATA_URL", "http://127.0.0.1:9/hellaswag_{split}.jsonl")  # nothing listens
    with pytest.raises(ValueError, match=r"^could not download http://127.0.0.1:9/hellaswag_val.jsonl "
                                         r"\(.*\); pass --data PATH to a local hellaswag_val.jsonl$"):
        hellaswag_scoring.download("val", str(tmp_path))
    assert os.listdir(tmp_path) == []

    class Broken:  # a connection that dies mid-file
        def __enter__(self): return self
        def __exit__(self, *a): return False
        def read(self, n=-1): raise TimeoutError("timed out")
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: Broken())
    with pytest.raises(ValueError, match=r"could not download .* \(timed out\)"):
        hellaswag_scoring.download("val", str(tmp_path))
    assert os.listdir(tmp_path) == []  # no half-written file that a later run would trust


def test_cache_dir_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv("GPT2_REPRO_CACHE", str(tmp_path))
    assert hellaswag_scoring.default_data_path("train") == str(tmp_path / "hellaswag" / "hellaswag_train.jsonl")
    monkeypatch.delenv("GPT2_REPRO_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hellaswag_scoring.default_cache_dir() == str(tmp_path / "xdg" / "gpt2-repro" / "hellaswag")


def test_cli_help_and_bad_input_are_one_line_errors(tmp_path, examples, capsys, monkeypatch):
    with pytest.raises(SystemExit) as exit_:
        hellaswag.main(["--help"])
    assert exit_.value.code == 0 and "--checkpoint" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        hellaswag.main(["--data", "x.jsonl"])  # neither --model nor --checkpoint
    assert exit_.value.code == 2
    path = _bad_file(tmp_path, examples, "{nope")
    with pytest.raises(SystemExit, match=rf"^hellaswag.py: error: {path}:3: malformed JSON"):
        hellaswag.main(["--model", "gpt2", "--data", path])
    monkeypatch.setattr(hellaswag_scoring, "DATA_URL", "http://127.0.0.1:9/hellaswag_{split}.jsonl")
    with pytest.raises(SystemExit, match=r"^hellaswag.py: error: could not download .*; pass --data PATH"):
        hellaswag.main(["--model", "gpt2", "--cache-dir", str(tmp_path / "c")])


def test_cli_threads_and_batch_size(tmp_path, examples, monkeypatch, capsys):
    """--threads sets torch's CPU threads before scoring; --batch-size, when given, is what
    evaluate() gets, and otherwise the device's default; both must be at least 1."""
    _tiny_gpt().save_pretrained(str(tmp_path / "hf"))
    data = write_jsonl(tmp_path / "h.jsonl", examples[:2])
    seen = []
    monkeypatch.setattr(hellaswag_scoring, "evaluate", lambda *a, batch_size, **kw: seen.append(
        (batch_size, torch.get_num_threads())) or {"total": 1, "correct": 1, "correct_norm": 1})
    threads = torch.get_num_threads()
    try:
        hellaswag.main(["--model", str(tmp_path / "hf"), "--data", data, "--device", "cpu", "--threads", "1"])
        hellaswag.main(["--model", str(tmp_path / "hf"), "--data", data, "--device", "cpu", "--batch-size", "3"])
    finally:
        torch.set_num_threads(threads)
    assert seen == [(1, 1), (3, 1)]
    for flag in ("--threads", "--batch-size", "--limit"):
        with pytest.raises(SystemExit) as exit_:
            hellaswag.parse_args(["--model", "gpt2", flag, "0"])
        assert exit_.value.code == 2 and f"{flag} must be at least 1" in capsys.readouterr().err
    assert hellaswag.parse_args(["--model", "gpt2"]).batch_size is None   # left to the device


def _tiny_gpt(seed=0):
    import train_gpt2
    torch.manual_seed(seed)
    config = train_gpt2.GPTConfig(**train_gpt2.MODEL_PRESETS["tiny"])  # block_size 64: contexts get truncated
    return train_gpt2.GPT(config).eval()


def test_cli_evaluates_a_saved_gpt_and_a_checkpoint(tmp_path, examples, tok, capsys):
    import dataclasses
    import subprocess
    import sys
    import checkpoints
    examples = examples[:10]
    data = write_jsonl(tmp_path / "hellaswag_val.jsonl", examples)
    model = _tiny_gpt()
    expected = hellaswag_scoring.evaluate(model, examples, tok, "cpu")
    # Hugging Face format directory, in-process
    model.save_pretrained(str(tmp_path / "hf"))
    assert hellaswag.main(["--model", str(tmp_path / "hf"), "--data", data, "--device", "cpu",
                           "--batch-size", "5"]) == expected
    n = len(examples)
    assert (f"acc {expected['correct'] / n:.4f} ({expected['correct']}/{n}) acc_norm "
            f"{expected['correct_norm'] / n:.4f} ({expected['correct_norm']}/{n}) | {n} examples in"
            in capsys.readouterr().out)
    # a training checkpoint, through the real command line (--limit: the first 4 examples)
    ckpt = str(tmp_path / "ckpt_000010.pt")
    checkpoints.save_checkpoint(ckpt, {"model": model.state_dict(), "model_config": dataclasses.asdict(model.config),
                                      "config": {"tokenizer": "gpt2"}})
    first4 = hellaswag_scoring.evaluate(model, examples[:4], tok, "cpu")
    out = subprocess.run([sys.executable, "hellaswag.py", "--checkpoint", ckpt, "--data", data, "--limit", "4"],
                         cwd=os.path.dirname(os.path.abspath(hellaswag_scoring.__file__)), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith(f"hellaswag hellaswag_val.jsonl: acc {first4['correct'] / 4:.4f} ({first4['correct']}/4) "
                           f"acc_norm {first4['correct_norm'] / 4:.4f} ({first4['correct_norm']}/4) | 4 examples in ")
    assert "examples/s on cpu, 1 per forward pass)" in last   # the CPU default batch size
    # a broken checkpoint is a one-line error
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match=r"^hellaswag.py: error: [^\n]*junk.pt: not a readable checkpoint[^\n]*$"):
        hellaswag.main(["--checkpoint", str(tmp_path / "junk.pt"), "--data", data])


def test_real_gpt_batched_equals_one_at_a_time(examples, tok):
    """train_gpt2.GPT (block_size 64, so long contexts are truncated) scores the same in any batch."""
    model = _tiny_gpt(seed=3)
    rendered = [hellaswag_scoring.render_example(ex, tok, max_len=65) for ex in examples[:10]]
    assert sum(r[0].size(1) == 65 for r in rendered) >= 3  # some were truncated to the block size
    one = torch.cat([hellaswag_scoring.score_batch(model, [r], "cpu")[1] for r in rendered])
    torch.testing.assert_close(hellaswag_scoring.score_batch(model, rendered, "cpu")[1], one, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("amp_dtype", [None, torch.bfloat16])
def test_real_gpt_scores_are_the_cross_entropy_of_its_logits(examples, tok, amp_dtype):
    """Scoring goes through the model's chunked loss (only the ending tokens get logits); the
    numbers are those of the full logits, with the same matmul precision under autocast (where a
    matmul over other rows may round a bf16 logit differently: a looser 1e-5)."""
    rtol = 1e-6 if amp_dtype is None else 1e-5
    model = _tiny_gpt(seed=4)
    rendered = [hellaswag_scoring.render_example(ex, tok, max_len=65) for ex in examples[:6]]
    sum_loss, mean_loss = hellaswag_scoring.score_batch(model, rendered, "cpu", amp_dtype)
    for b, (tokens, mask, _) in enumerate(rendered):
        with torch.no_grad(), hellaswag_scoring.autocast_for("cpu", amp_dtype):
            logits, _ = model(tokens[:, :-1])
        losses = F.cross_entropy(logits.float().transpose(1, 2), tokens[:, 1:], reduction="none") * mask[:, 1:]
        torch.testing.assert_close(sum_loss[b], losses.sum(1), rtol=rtol, atol=1e-5)
        torch.testing.assert_close(mean_loss[b], losses.sum(1) / mask[:, 1:].sum(1), rtol=rtol, atol=1e-6)


def test_autocast_follows_the_trainer(tmp_path, examples, monkeypatch):
    import contextlib
    import warnings
    import train_gpt2
    assert isinstance(hellaswag_scoring.autocast_for("cpu"), contextlib.nullcontext)  # exact fp32 by default
    assert isinstance(hellaswag_scoring.autocast_for(torch.device("cpu"), torch.float32), contextlib.nullcontext)
    assert hellaswag_scoring.autocast_for("cpu", torch.bfloat16).fast_dtype == torch.bfloat16  # the run's --dtype wins
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "CUDA is not available" on CPU-only machines
        cuda = hellaswag_scoring.autocast_for("cuda:0", torch.float16)
    assert isinstance(cuda, torch.autocast) and cuda.device == "cuda" and cuda.fast_dtype == torch.float16
    # the command line scores in the dtype the trainer would pick for the device (bf16, fp16 or fp32)
    _tiny_gpt().save_pretrained(str(tmp_path / "hf"))
    seen = []
    monkeypatch.setattr(train_gpt2, "resolve_dtype", lambda request, device_type: (request, device_type))
    monkeypatch.setattr(hellaswag_scoring, "evaluate", lambda *a, amp_dtype, **kw: seen.append(amp_dtype) or
                        {"total": 1, "correct": 1, "correct_norm": 1})
    hellaswag.main(["--model", str(tmp_path / "hf"), "--data", write_jsonl(tmp_path / "h.jsonl", examples[:1]),
                    "--device", "cpu"])
    assert seen == [("auto", "cpu")]
