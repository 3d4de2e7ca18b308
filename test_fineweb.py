"""Tests for fineweb.py: local corpora (jsonl, parquet, txt) -> shards -> tokens back -> the
original documents, in order; exact shard boundaries; disjoint splits; byte-identical resume;
manifest counts and checksums; clear errors with nothing half-written."""
import contextlib
import errno
import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tiktoken

import bpe
import files
import fineweb
import shard_format

HERE = os.path.dirname(os.path.abspath(__file__))
ENC = tiktoken.get_encoding("gpt2")
EOT = ENC.eot_token
VAL_FRACTION = 0.2
SHARD = 997   # a prime, so shard ends fall anywhere inside documents
KW = dict(val_fraction=VAL_FRACTION, shard_tokens=SHARD, workers=0, progress=False)  # the reference build's settings


def make_docs(n=80, seed=1):
    """Documents of very different lengths, with unicode, code, and a literal <|endoftext|>."""
    rng = random.Random(seed)
    words = ["the", "model", "token", "über", "naïve", "東京", "😀", "def", "x = 1", "\n", "  ", "3.14", "—", "'s"]
    docs = []
    for i in range(n):
        length = rng.choice([1, 5, 40, 200, 900])
        docs.append(f"doc {i}: " + " ".join(rng.choice(words) for _ in range(length)))
    docs[3] = "a literal <|endoftext|> inside text stays text"
    docs[7] = "x" * 5000 + " one long document spanning several shards"
    return docs


def expected_split(docs, fraction=VAL_FRACTION):
    """The documented rule, re-implemented: blake2b-64 of the UTF-8 text / 2**64 < fraction -> val."""
    val, train = [], []
    for d in docs:
        h = int.from_bytes(hashlib.blake2b(d.encode(), digest_size=8).digest(), "big") / 2**64
        (val if h < fraction else train).append(d)
    return {"val": val, "train": train}


def read_tokens(out, manifest, split):
    return np.concatenate([np.load(os.path.join(out, s["file"])) for s in manifest["splits"][split]["shards"]])


def documents_from_tokens(tokens):
    """Cut a token stream at eot ids; every document must start with one."""
    assert tokens[0] == EOT
    cuts = np.flatnonzero(tokens == EOT)
    return [ENC.decode(tokens[a + 1:b].tolist()) for a, b in zip(cuts, list(cuts[1:]) + [len(tokens)])]


def check_build(out, manifest, expected, shard_tokens=SHARD):
    """Everything a reader of the shards relies on, checked against the original documents."""
    assert manifest["format"] == "gpt2-token-shards" and manifest["version"] == 1
    assert manifest["tokenizer"] == {"spec": "gpt2", "identity": "tiktoken:gpt2", "vocab_size": 50257, "eot_id": EOT}
    assert manifest["dtype"] == "uint16" and manifest["shard_tokens"] == shard_tokens
    for split in ("val", "train"):
        info, docs = manifest["splits"][split], expected[split]
        for i, shard in enumerate(info["shards"]):
            path = os.path.join(out, shard["file"])
            assert shard["file"] == f"{split}_{i:06d}.npy"
            with open(path, "rb") as f:
                assert hashlib.sha256(f.read()).hexdigest() == shard["sha256"]
            arr = np.load(path)
            assert arr.dtype == np.uint16 and arr.ndim == 1 and len(arr) == shard["tokens"]
            last = i == len(info["shards"]) - 1
            assert (0 < len(arr) <= shard_tokens) if last else len(arr) == shard_tokens
        tokens = read_tokens(out, manifest, split)
        # Exact boundaries: the shards concatenate to precisely [eot] + tokens(doc) for each doc.
        reference = np.concatenate([[EOT] + ENC.encode_ordinary(d) for d in docs])
        assert np.array_equal(tokens, reference)
        assert documents_from_tokens(tokens) == docs
        assert info["documents"] == len(docs) and info["tokens"] == len(tokens)
        assert info["bytes"] == sum(len(d.encode()) for d in docs)
        assert info["bytes_per_token"] == pytest.approx(info["bytes"] / info["tokens"])
    assert set(expected["val"]).isdisjoint(expected["train"])
    assert sorted(f for f in os.listdir(out) if f.endswith(".npy")) == sorted(
        s["file"] for sp in ("val", "train") for s in manifest["splits"][sp]["shards"])


def write_jsonl(path, docs, column="text"):
    with open(path, "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({"id": 0, column: d}) + "\n")
    return str(path)


def dir_bytes(out):
    result = {}
    for name in sorted(os.listdir(out)):
        with open(os.path.join(out, name), "rb") as f:
            result[name] = f.read()
    return result


@pytest.fixture(scope="module")
def docs():
    return make_docs()


# ---- round trips for each local format ---------------------------------------------------------

def test_jsonl_roundtrip_with_workers(tmp_path, docs, monkeypatch):
    monkeypatch.setattr(fineweb, "TASK_CHARS", 2000)   # ~25 batches over both workers, in order
    src = write_jsonl(tmp_path / "c.jsonl", docs)
    out = str(tmp_path / "out")
    m = fineweb.build_from_source(out, src, val_fraction=VAL_FRACTION, shard_tokens=SHARD, workers=2, progress=False)
    expected = expected_split(docs)
    assert len(expected["val"]) >= 5 and len(m["splits"]["train"]["shards"]) >= 10
    assert m["source"] == os.path.abspath(src)
    check_build(out, m, expected)
    with open(os.path.join(out, "manifest.json")) as f:
        assert json.load(f) == m
    # The manifest has exactly the keys of the README's shard format, nothing run-specific (times, hosts).
    assert set(m) == {"format", "version", "source", "tokenizer", "dtype", "shard_tokens", "split_rule", "splits"}
    assert m["split_rule"] == f"blake2b-hash:{VAL_FRACTION}"
    assert set(m["splits"]["val"]) == {"documents", "tokens", "bytes", "bytes_per_token", "shards"}


def test_parquet_roundtrip_multiple_files_in_a_folder(tmp_path, docs):
    folder = tmp_path / "pq"
    folder.mkdir()
    # Two files; the folder is read in sorted file order.
    pq.write_table(pa.table({"body": docs[40:], "n": list(range(40))}), folder / "b.parquet")
    pq.write_table(pa.table({"body": docs[:40], "n": list(range(40))}), folder / "a.parquet")
    out = str(tmp_path / "out")
    m = fineweb.build_from_source(out, str(folder), text_column="body", val_fraction=VAL_FRACTION,
                                  shard_tokens=SHARD, workers=1, progress=False)
    check_build(out, m, expected_split(docs))


def test_txt_files_are_one_document_each(tmp_path, docs):
    folder = tmp_path / "txt"
    (folder / "sub").mkdir(parents=True)
    names = []
    for i, d in enumerate(docs):
        name = f"sub/{i:03d}.txt" if i % 3 == 0 else f"{i:03d}.txt"   # nested folders are searched too
        (folder / name).write_text(d, encoding="utf-8")
        names.append(name)
    order = [d for _, d in sorted(zip(names, docs))]   # documents come in sorted path order
    out = str(tmp_path / "out")
    m = fineweb.build_from_source(out, str(folder), val_fraction=VAL_FRACTION, shard_tokens=SHARD,
                                  workers=0, progress=False)
    check_build(out, m, expected_split(order))


def test_default_source_streams_fineweb_edu(tmp_path, docs, monkeypatch):
    """No network here: the Hub call is checked, and answered by a local stream of the same kind."""
    import datasets
    real, calls = datasets.load_dataset, []
    local = write_jsonl(tmp_path / "c.jsonl", docs)

    def fake_load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return real("json", data_files=local, split="train", streaming=True)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    src = fineweb.open_source("fineweb-edu")
    assert src.name == "HuggingFaceFW/fineweb-edu:sample-10BT"
    assert list(src.documents()) == docs
    assert (src.done, src.total, src.unit) == (len(docs), 9_672_101, " docs")   # the progress line's total and count
    assert calls == [(("HuggingFaceFW/fineweb-edu",), {"split": "train", "streaming": True, "name": "sample-10BT"})]
    assert fineweb.default_out_dir("fineweb-edu") == os.path.join("data", "fineweb-edu")


def test_encoder_matches_encode_ordinary_on_special_text(docs):
    tok = bpe.load_tokenizer("gpt2")
    texts = docs[:10] + ["<|endoftext|>", "", "a<|endoftext|>b", "lone \ud800 surrogate"]
    flat, lengths, nbytes = fineweb.tokenize_documents(texts, tok, np.uint16)
    assert np.array_equal(flat, np.concatenate([[EOT] + ENC.encode_ordinary(t) for t in texts]))
    assert lengths.tolist() == [1 + len(ENC.encode_ordinary(t)) for t in texts]
    assert nbytes.tolist() == [len(t.encode("utf-8", "replace")) for t in texts]


def test_vocab_over_65536_gives_uint32(tmp_path):
    big = tiktoken.Encoding("big", pat_str=ENC._pat_str, mergeable_ranks=ENC._mergeable_ranks,
                            special_tokens={bpe.EOT: 70000})
    tok = bpe.LoadedTokenizer("big", "test:big", big, 70000, 70001)
    out = str(tmp_path / "out")
    m = fineweb.write_shards(out, ["train text", "more train"], ["val text"], tok, "t", shard_tokens=3,
                             workers=1, progress=False)   # the worker gets this tokenizer, not "gpt2"
    assert m["dtype"] == "uint32"
    tokens = read_tokens(out, m, "train")
    assert tokens.dtype == np.uint32 and tokens[0] == 70000
    assert tokens.tolist() == [70000] + ENC.encode_ordinary("train text") + [70000] + ENC.encode_ordinary("more train")


def test_bpe_model_file_tokenizer(tmp_path, docs):
    model = str(tmp_path / "tiny.model")
    bpe.Tokenizer().train("\n".join(docs), vocab_size=300, special_tokens=[bpe.EOT]).save(model)
    tok = bpe.load_tokenizer(model)
    src = write_jsonl(tmp_path / "c.jsonl", docs)
    out = str(tmp_path / "out")
    fineweb.main(["--source", src, "--tokenizer", model, "--out", out, "--shard-tokens", "5000",
                  "--val-fraction", str(VAL_FRACTION), "--workers", "2", "--quiet"])
    with open(os.path.join(out, "manifest.json")) as f:
        m = json.load(f)
    with open(model, "rb") as f:
        identity = "bpe:sha256:" + hashlib.sha256(f.read()).hexdigest()
    assert m["tokenizer"] == {"spec": model, "identity": identity, "vocab_size": 300, "eot_id": tok.eot_id}
    assert m["dtype"] == "uint16"
    expected = expected_split(docs)
    for split in ("val", "train"):
        tokens = read_tokens(out, m, split)
        cuts = np.flatnonzero(tokens == tok.eot_id)
        assert len(cuts) == len(expected[split]) and cuts[0] == 0
        decoded = [tok.decode(tokens[a + 1:b].tolist()) for a, b in zip(cuts, list(cuts[1:]) + [len(tokens)])]
        assert decoded == expected[split]
        assert m["splits"][split]["tokens"] == len(tokens)


# ---- the embedded corpus and the issue-6 helpers ---------------------------------------------

def test_pydocs_corpus_is_deterministic_and_offline():
    first = list(fineweb.pydocs_documents())
    from pydoc_data.topics import topics
    assert first[:len(topics)] == [topics[k] for k in sorted(topics)]
    size = sum(len(d.encode()) for d in first)
    assert 1_000_000 < size < 10_000_000 and all(first)
    assert any(d.startswith("json\nJSON (JavaScript Object Notation)") for d in first)   # module docstrings
    assert any("json.decoder.JSONDecoder.decode\n" in d for d in first)                         # method docstrings
    assert not any(d.startswith("test.") for d in first)                                 # tests excluded
    # Deterministic: modules come in sorted dotted-name order (each document starts with its name).
    modules = [d.split("\n", 1)[0] for d in first[len(topics):]]
    assert modules == sorted(modules) and len(modules) > 300
    assert fineweb.open_source("pydocs").name == "pydocs:python-" + sys.version.split()[0]


def test_split_by_bytes_and_write_shards_for_one_text_file(tmp_path):
    text = "ab" * 50
    train, val = fineweb.split_by_bytes(text, 0.1)
    assert (len(train), len(val)) == (90, 10) and train + val == text
    train, val = fineweb.split_by_bytes("é" * 10, 0.15)   # 20 bytes; byte 17 is inside an 'é'
    assert train + val == "é" * 10 and len(train.encode()) == 16
    shakespeare = "First Citizen:\nBefore we proceed any further, hear me speak.\n" * 40
    train, val = fineweb.split_by_bytes(shakespeare, 0.1)
    out = str(tmp_path / "out")
    m = fineweb.write_shards(out, [train], [val], "gpt2", "shakespeare", shard_tokens=100, workers=0, progress=False)
    check_build(out, m, {"train": [train], "val": [val]}, shard_tokens=100)


def test_cli_val_from_tail_on_a_txt_file(tmp_path):
    text = "".join(f"line {i} of a play\n" for i in range(300))
    (tmp_path / "play.txt").write_text(text)
    out = str(tmp_path / "out")
    fineweb.main(["--source", str(tmp_path / "play.txt"), "--out", out, "--val-from", "tail",
                  "--val-fraction", "0.1", "--shard-tokens", "500", "--workers", "0", "--quiet"])
    with open(os.path.join(out, "manifest.json")) as f:
        m = json.load(f)
    train, val = fineweb.split_by_bytes(text, 0.1)
    check_build(out, m, {"train": [train], "val": [val]}, shard_tokens=500)


def test_val_from_tail_reads_no_more_than_two_documents(tmp_path, monkeypatch):
    """A many-document source is refused after its second document, not read to the end."""
    def documents():
        yield "one"
        yield "two"
        raise AssertionError("read past the second document")

    monkeypatch.setattr(fineweb, "open_source", lambda spec, column: fineweb.Source("big", lambda source: documents()))
    msg = cli_error(["--source", "big", "--val-from", "tail"], tmp_path / "out")
    assert "exactly one document" in msg and "big has more than one document" in msg


def test_val_from_tail_refuses_an_empty_side(tmp_path):
    """A tiny text cut at 1% would leave val with no bytes: only an eot, a meaningless val loss."""
    with pytest.raises(ValueError, match="leaves the val part empty"):
        fineweb.split_by_bytes("x" * 40, 0.01)
    with pytest.raises(ValueError, match="leaves the train part empty"):
        fineweb.split_by_bytes("x" * 40, 0.99)
    (tmp_path / "tiny.txt").write_text("Hello world, this is a short text file.\n")
    msg = cli_error(["--source", str(tmp_path / "tiny.txt"), "--val-from", "tail", "--val-fraction", "0.01"],
                    tmp_path / "out")
    assert "40-byte text leaves the val part empty" in msg and "--val-fraction" in msg
    (tmp_path / "blank.txt").write_text("")
    msg = cli_error(["--source", str(tmp_path / "blank.txt"), "--val-from", "tail"], tmp_path / "o2")
    assert "is empty" in msg


# ---- local files: read directly, exactly as `datasets` read them ---------------------------------

def test_local_files_give_the_documents_datasets_gave(tmp_path):
    """fineweb.py reads local files itself (not through `datasets`, whose import costs seconds):
    every format yields exactly the documents `datasets`' streaming loaders yield for it, so
    shards built before and after that change are byte-identical. The odd corners are here:
    byte-order marks, CRLF and lone CR line ends, blank and whitespace-only lines, JSON arrays."""
    import datasets
    datasets.disable_progress_bars()
    texts = ["plain", "über 東京 😀", "tab\there", "line\nbreak", "crlf\r\ninside", "", "  spaces  ", "<|endoftext|>"]
    lines = [json.dumps({"text": t, "n": i}) for i, t in enumerate(texts)]
    (tmp_path / "a.jsonl").write_bytes(("\ufeff" + lines[0] + "\r\n\r\n" + "\r\n".join(lines[1:4]) + "\n   \n\t\n"
                                        + "\n".join(lines[4:]) + "\n").encode())
    (tmp_path / "rows.json").write_text(json.dumps([{"text": t} for t in texts], indent=1))
    (tmp_path / "strings.json").write_text(json.dumps(texts))
    (tmp_path / "lines.json").write_text("\n".join(lines))
    (tmp_path / "e.txt").write_bytes("\ufeffa\r\nb\rc\n\nüber\r\n".encode())
    pq.write_table(pa.table({"text": pa.array(texts, pa.large_string())}), tmp_path / "f.parquet")
    for name, loader, kwargs in [("a.jsonl", "json", {}), ("rows.json", "json", {}), ("strings.json", "json", {}),
                                 ("lines.json", "json", {}), ("e.txt", "text", {"sample_by": "document"}),
                                 ("f.parquet", "parquet", {})]:
        path = str(tmp_path / name)
        theirs = [row["text"] for row in datasets.load_dataset(loader, data_files=[path], split="train",
                                                                streaming=True, **kwargs)]
        src = fineweb.open_source(path)
        assert list(src.documents()) == theirs, name
        assert src.done == src.total == os.path.getsize(path), name   # the progress line's bytes read, at the end
        assert theirs in (texts, ["\ufeffa\nb\nc\n\nüber\n"])   # (and they are what was written)


def test_a_local_build_starts_without_datasets_or_torch(tmp_path, docs):
    """Start-up is part of the job: a local corpus needs neither `datasets` nor torch (seconds
    of imports), nor tqdm when quiet, nor pyarrow unless it is parquet."""
    src = write_jsonl(tmp_path / "c.jsonl", docs)
    code = ("import sys, fineweb; fineweb.main(sys.argv[1:]); "
            "print(sorted(m for m in ('datasets', 'torch', 'pyarrow', 'pandas', 'tqdm') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code, "--source", src, "--out", str(tmp_path / "out"), "--quiet",
                          "--val-fraction", str(VAL_FRACTION), "--workers", "1"], cwd=HERE, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-1] == "[]"


def test_json_documents_parquet_columns_and_their_errors(tmp_path):
    def error(name, content):
        path = tmp_path / name
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
        return cli_error(["--source", str(path)], tmp_path / f"out-{name}")

    assert error("items.json", '[{"text": "a"}, {"text": 3}]').endswith("items.json: item 2: 'text' holds a number, not text")
    assert error("cut.json", '[{"text": "a"},\n {"text"').endswith(
        "cut.json:2: not valid JSON: Expecting ':' delimiter at column 9")
    assert error("object.json", '{\n  "text": "pretty-printed"\n}\n').endswith(
        "object.json:1: not valid JSON: Expecting property name enclosed in double quotes at column 2; "
        "a .json file holds JSON lines or one JSON array")
    assert error("latin1.jsonl", b'{"text": "ok"}\n{"text": "caf\xe9"}\n').endswith(
        "latin1.jsonl:2: not UTF-8 text (byte 0xe9 at column 14)")
    assert error("array.jsonl", '["a", "b"]\n').endswith("array.jsonl:1: an array, not a JSON object")
    pq.write_table(pa.table({"body": ["a", "b"]}), tmp_path / "body.parquet")
    msg = cli_error(["--source", str(tmp_path / "body.parquet")], tmp_path / "o1")
    assert msg.endswith(f"{tmp_path / 'body.parquet'} has no column 'text' (it has: body); choose one with --text-column")
    pq.write_table(pa.table({"text": [1, 2]}), tmp_path / "ints.parquet")
    msg = cli_error(["--source", str(tmp_path / "ints.parquet")], tmp_path / "o2")
    assert msg.endswith(f"{tmp_path / 'ints.parquet'}: column 'text' holds int64, not text")


def test_help_runs():
    r = subprocess.run([sys.executable, "fineweb.py", "--help"], cwd=HERE, capture_output=True, text=True)
    assert r.returncode == 0 and "--shard-tokens" in r.stdout and "pydocs" in r.stdout


# ---- resuming --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def reference_build(tmp_path_factory, docs):
    """An uninterrupted build that interrupted ones must reproduce byte for byte."""
    base = tmp_path_factory.mktemp("ref")
    src = write_jsonl(base / "c.jsonl", docs)
    out = str(base / "out")
    fineweb.build_from_source(out, src, val_fraction=VAL_FRACTION, shard_tokens=SHARD, workers=0, progress=False)
    return src, dir_bytes(out)


@pytest.mark.parametrize("stop_after, first_workers, task_chars", [(1, 2, 3000), (6, 0, 1 << 20), (17, 1, 500)])
def test_interrupted_run_resumes_byte_identical(tmp_path, reference_build, stop_after, first_workers, task_chars,
                                                monkeypatch):
    """Stop after some shards, resume with another worker count and batch size: same bytes."""
    src, reference = reference_build
    out = str(tmp_path / "out")
    kw = dict(val_fraction=VAL_FRACTION, shard_tokens=SHARD, progress=False)
    monkeypatch.setattr(fineweb, "TASK_CHARS", task_chars)   # many small batches, mixed splits
    assert fineweb.build_from_source(out, src, workers=first_workers, stop_after_shards=stop_after, **kw) is None
    monkeypatch.setattr(fineweb, "TASK_CHARS", 1 << 20)
    assert not os.path.exists(os.path.join(out, "manifest.json"))
    with open(os.path.join(out, "progress.json")) as f:
        done = {s["file"] for sp in json.load(f)["splits"].values() for s in sp["shards"]}
    assert len(done) == stop_after
    stamps = {f: os.stat(os.path.join(out, f)).st_mtime_ns for f in done}
    calls, real = [], shard_format.write_shard
    monkeypatch.setattr(shard_format, "write_shard", lambda path, tokens: calls.append(os.path.basename(path)) or real(path, tokens))
    fineweb.build_from_source(out, src, workers=1, **kw)   # another worker count: same bytes
    assert dir_bytes(out) == reference
    assert not done & set(calls)                                            # finished shards skipped...
    assert all(os.stat(os.path.join(out, f)).st_mtime_ns == stamps[f] for f in done)   # ...untouched


def test_interrupted_at_any_write_reruns_to_the_same_build(tmp_path, docs, monkeypatch):
    """Ctrl-C at each file write of a build (every shard, every progress save, the manifest),
    then the same call again: always the uninterrupted build, byte for byte. The last points
    matter most: after the final progress save a rerun used to write the last documents again."""
    def build(out):
        return fineweb.build_shards(out, fineweb.split_by_hash(docs, VAL_FRACTION), split_rule="test",
                                    shard_tokens=4000, workers=0, progress=False)

    build(str(tmp_path / "ref"))
    reference = dir_bytes(str(tmp_path / "ref"))
    real_shard, real_json, writes = shard_format.write_shard, files.write_json, []

    def interrupt_at(k, real):
        def write(path, data):
            writes.append(os.path.basename(path))
            if len(writes) == k:
                raise KeyboardInterrupt
            return real(path, data)
        return write

    k = 0
    while True:
        k += 1
        out = str(tmp_path / f"out{k}")
        writes.clear()
        monkeypatch.setattr(shard_format, "write_shard", interrupt_at(k, real_shard))
        monkeypatch.setattr(files, "write_json", interrupt_at(k, real_json))
        try:
            build(out)
        except KeyboardInterrupt:
            pass
        else:
            break   # k is past the last write: every point has been tried
        monkeypatch.setattr(shard_format, "write_shard", real_shard)
        monkeypatch.setattr(files, "write_json", real_json)
        build(out)
        assert dir_bytes(out) == reference, f"interrupted before write {k} ({writes[-1]})"
    assert k > 15 and writes[-2:] == ["progress.json", "manifest.json"]


@pytest.mark.parametrize("stop_after, lost", [
    (None, ["manifest.json"]),                       # a finished build whose manifest was deleted
    (9, ["progress.json", "train_000003.npy"]),      # a crash before the first progress write
])
def test_lost_files_are_rebuilt_identically(tmp_path, reference_build, stop_after, lost):
    src, reference = reference_build
    out = str(tmp_path / "out")
    fineweb.build_from_source(out, src, stop_after_shards=stop_after, **KW)
    for name in lost:
        os.remove(os.path.join(out, name))
    m = fineweb.build_from_source(out, src, **KW)
    assert dir_bytes(out) == reference   # same shards and sha256s, no extra shard file
    check_build(out, m, expected_split(make_docs()))


def test_failed_manifest_write_reruns_to_the_same_build(tmp_path, reference_build, monkeypatch):
    src, reference = reference_build
    out = str(tmp_path / "out")
    real = files.write_json

    def disk_full_at_manifest(path, obj):
        if path.endswith("manifest.json"):
            raise OSError(errno.ENOSPC, f"cannot write {path}: No space left on device")
        real(path, obj)

    monkeypatch.setattr(files, "write_json", disk_full_at_manifest)
    with pytest.raises(OSError, match="No space left"):
        fineweb.build_from_source(out, src, **KW)
    monkeypatch.setattr(files, "write_json", real)
    fineweb.build_from_source(out, src, **KW)
    assert dir_bytes(out) == reference


def test_resume_refuses_a_damaged_shard(tmp_path, reference_build):
    src, _ = reference_build
    out = str(tmp_path / "out")
    fineweb.build_from_source(out, src, stop_after_shards=4, **KW)
    with open(os.path.join(out, "progress.json")) as f:
        second = [s["file"] for sp in json.load(f)["splits"].values() for s in sp["shards"]][1]
    with open(os.path.join(out, second), "r+b") as f:
        f.seek(-1, os.SEEK_END)
        last = f.read(1)[0]
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last ^ 1]))   # one flipped bit: the recorded checksum no longer holds
    with pytest.raises(ValueError, match=second + " is missing or differs"):
        fineweb.build_from_source(out, src, **KW)


@pytest.mark.parametrize("stop_after, damaged", [(4, "progress.json"), (None, "manifest.json")])
def test_a_damaged_progress_or_manifest_is_a_one_line_error(tmp_path, reference_build, stop_after, damaged):
    src, _ = reference_build
    out = str(tmp_path / "out")
    fineweb.build_from_source(out, src, stop_after_shards=stop_after, **KW)
    with open(os.path.join(out, damaged), "r+b") as f:
        f.truncate(os.path.getsize(os.path.join(out, damaged)) // 2)   # cut off mid-write
    with pytest.raises(ValueError) as e:
        fineweb.build_from_source(out, src, **KW)
    message = str(e.value)
    assert message.startswith(f"{os.path.join(out, damaged)}: cannot read it as JSON (") and "\n" not in message
    assert message.endswith(f"; delete {out} and start again")


def test_only_a_killed_builds_own_temp_files_are_removed(tmp_path, reference_build):
    """atomic_write leaves ".NAME.<random>.tmp" when killed mid-write; a rerun deletes those of
    the files a build writes (shards, manifest.json, progress.json), and nothing else."""
    src, reference = reference_build
    out = tmp_path / "out"
    out.mkdir()
    ours = [".train_000003.npy.k2x9ab.tmp", ".val_000000.npy.a_1.tmp", ".manifest.json.zz8.tmp", ".progress.json.q.tmp"]
    others = [".notes.txt.abc.tmp", ".train_3.npy.abc.tmp", ".train_000003.npy.abc", "train_000003.npy.abc.tmp"]
    for name in ours + others:
        (out / name).write_bytes(b"partial")
    fineweb.build_from_source(str(out), src, **KW)
    assert sorted(set(os.listdir(out)) & set(ours + others)) == sorted(others)
    for name in others:
        os.remove(out / name)
    assert dir_bytes(str(out)) == reference


def test_killed_cli_run_resumes_byte_identical(tmp_path, docs):
    src = write_jsonl(tmp_path / "c.jsonl", docs * 2)
    args = ["--source", src, "--val-fraction", "0.2", "--shard-tokens", "400", "--workers", "1", "--quiet"]
    ref, out = str(tmp_path / "ref"), str(tmp_path / "out")
    fineweb.main(args + ["--out", ref])
    proc = subprocess.Popen([sys.executable, "fineweb.py"] + args + ["--out", out], cwd=HERE)
    progress = os.path.join(out, "progress.json")
    while not os.path.exists(progress) and proc.poll() is None:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not os.path.exists(os.path.join(out, "manifest.json")), "finished before it could be killed"
    r = subprocess.run([sys.executable, "fineweb.py"] + args + ["--out", out], cwd=HERE, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert dir_bytes(out) == dir_bytes(ref)   # also: no temp file of the killed run is left


def test_ctrl_c_with_workers_prints_one_line(tmp_path, docs):
    """Ctrl-C signals the whole process group, workers included: only the parent may speak."""
    src = write_jsonl(tmp_path / "c.jsonl", docs * 4)
    out = str(tmp_path / "out")
    args = ["--source", src, "--out", out, "--shard-tokens", "400", "--val-fraction", str(VAL_FRACTION), "--quiet"]
    proc = subprocess.Popen([sys.executable, "fineweb.py", "--workers", "2"] + args, cwd=HERE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)   # its own group, as a terminal's job
    while not os.path.exists(os.path.join(out, "progress.json")) and proc.poll() is None:
        time.sleep(0.002)   # the workers are up once the first shard is written
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert not os.path.exists(os.path.join(out, "manifest.json")), "finished before it could be interrupted"
    assert proc.returncode == 1
    assert err == "fineweb.py: interrupted; run the same command again to continue\n"
    fineweb.main(args + ["--workers", "0"])   # and, as it says, running it again finishes the job
    with open(os.path.join(out, "manifest.json")) as f:
        check_build(out, json.load(f), expected_split(docs * 4), shard_tokens=400)


def hold_build_lock(out):
    """Another process holding out's lock, as a running build does: (that process, pid in its lock file)."""
    code = ("import files, sys; lock = files.hold_lock(sys.argv[1], 'build.lock', 'held'); print('held', flush=True); "
            "sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", code, str(out)], cwd=HERE, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    return holder


def test_a_second_build_into_the_same_out_is_refused_until_the_first_ends(tmp_path, reference_build):
    src, reference = reference_build
    out = tmp_path / "out"
    fineweb.build_from_source(str(out), src, stop_after_shards=4, **KW)   # a build under way ...
    holder = hold_build_lock(out)                                         # ... and still running
    before = dir_bytes(str(out))
    assert before["build.lock"] == f"{holder.pid}\n".encode()
    args = ["--source", src, "--shard-tokens", str(SHARD), "--val-fraction", str(VAL_FRACTION)]
    msg = cli_error(args, out)
    assert msg == (f"fineweb.py: error: {out} is in use by another build (pid {holder.pid}); wait for it to end, "
                   f"or pass another --out")
    assert dir_bytes(str(out)) == before   # nothing written, nothing removed
    holder.stdin.close()   # the holder ends (killed or not, the OS releases its lock) ...
    holder.wait(timeout=60)
    fineweb.main(args + ["--out", str(out), "--quiet", "--workers", "0"])   # ... and the build goes on
    assert dir_bytes(str(out)) == reference   # the lock file went with it


def test_a_running_build_keeps_a_second_one_out(tmp_path, reference_build, monkeypatch):
    """Mid-write of a shard (its temp file on disk), a second build into the same folder is
    refused: it would delete that temp file and write progress.json too. The first finishes."""
    src, reference = reference_build
    out = str(tmp_path / "out")
    real_save, second = np.save, []

    def save_and_start_another_build(f, arr, **kw):
        if not second:
            assert [n for n in os.listdir(out) if n.endswith(".tmp")]   # this shard's temp file
            second.append(subprocess.run([sys.executable, "fineweb.py", "--source", src, "--out", out, "--quiet",
                                          "--workers", "0"], cwd=HERE, capture_output=True, text=True, timeout=120))
        return real_save(f, arr, **kw)

    monkeypatch.setattr(np, "save", save_and_start_another_build)
    fineweb.build_from_source(out, src, **KW)
    assert second[0].returncode == 1
    assert second[0].stderr == (f"fineweb.py: error: {out} is in use by another build (pid {os.getpid()}); "
                                f"wait for it to end, or pass another --out\n")
    assert dir_bytes(out) == reference


def test_the_lock_helper_refuses_a_held_folder_and_leaves_none_behind(tmp_path):
    holder = hold_build_lock(tmp_path)
    with pytest.raises(files.UserError, match=f"^busy: pid {holder.pid}$"):
        files.hold_lock(str(tmp_path), "build.lock", "busy: pid {pid}")
    holder.kill()   # kill -9: no chance to clean up, yet the lock is free
    holder.wait(timeout=60)
    lock = files.hold_lock(str(tmp_path), "build.lock", "busy: pid {pid}")
    assert (tmp_path / "build.lock").read_text() == f"{os.getpid()}\n"
    files.release_lock(lock)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("change", ["appended", "same size and time", "touched", "file added"])
def test_resume_refuses_a_changed_source(tmp_path, docs, change):
    """A resumed build checks that its source is what it began with: a changed one would leave
    shards of the old text followed by shards of the new, matching neither."""
    folder = tmp_path / "src"
    folder.mkdir()
    path = write_jsonl(folder / "c.jsonl", docs)
    out = tmp_path / "out"
    fineweb.build_from_source(str(out), str(folder), stop_after_shards=4, **KW)
    with open(out / "progress.json") as f:
        assert list(json.load(f)["source_fingerprint"]["files"]) == [path]
    stat, data = os.stat(path), (folder / "c.jsonl").read_bytes()
    if change == "appended":
        (folder / "c.jsonl").write_bytes(data + b'{"text": "one more"}\n')
        what = f"{path} changed (its size)"
    elif change == "same size and time":   # another file copied in with the old one's times (cp -p)
        middle = len(data) // 2
        (folder / "c.jsonl").write_bytes(data[:middle] + data[middle:].replace(b"the", b"THE", 1))
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        what = f"{path} changed (its content)"
    elif change == "touched":
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        what = f"{path} changed (its modification time)"
    else:
        write_jsonl(folder / "d.jsonl", ["new text"])
        what = f"{folder / 'd.jsonl'} was added to the source"
    before = dir_bytes(str(out))
    msg = cli_error(["--source", str(folder), "--shard-tokens", str(SHARD), "--val-fraction", str(VAL_FRACTION)], out)
    assert msg == (f"fineweb.py: error: {what} since the build in {out} began, so resuming would mix old and new "
                   f"text; to start over, delete {out} or pass another --out")
    assert dir_bytes(str(out)) == before   # nothing written (twice or at all)


def test_progress_line_shows_the_total_an_eta_and_skipping(tmp_path, reference_build, capsys):
    from tqdm import tqdm
    src, reference = reference_build
    out = str(tmp_path / "out")
    kw = dict(val_fraction=VAL_FRACTION, shard_tokens=SHARD, workers=0)
    fineweb.build_from_source(out, src, progress=True, **kw)
    err = capsys.readouterr().err
    total = tqdm.format_sizeof(os.path.getsize(src))   # local files: bytes read of all their bytes
    assert "tokenizing: 100%" in err and f"| {total}/{total}B [" in err, err[-300:]
    assert re.search(r"\[\d\d:\d\d, ETA \d\d:\d\d, ", err), err[-300:]
    assert "skipping finished work" not in err
    # Resumed, it first reads past the finished documents: that is shown too, not a still line.
    out2 = str(tmp_path / "out2")
    fineweb.build_from_source(out2, src, progress=False, stop_after_shards=9, **kw)
    with open(os.path.join(out2, "progress.json")) as f:
        skipped = max(s["resume"][0] for s in json.load(f)["splits"].values())
    assert skipped > 0
    fineweb.build_from_source(out2, src, progress=True, **kw)
    err = capsys.readouterr().err
    assert f"skipping finished work: {skipped:,} of {skipped:,} documents" in err
    assert dir_bytes(out2) == reference


def test_finished_build_is_not_redone_and_other_config_is_refused(tmp_path, reference_build):
    src, reference = reference_build
    out = str(tmp_path / "out")
    kw = dict(val_fraction=VAL_FRACTION, workers=0, progress=False)
    m = fineweb.build_from_source(out, src, shard_tokens=SHARD, **kw)
    stamps = {f: os.stat(os.path.join(out, f)).st_mtime_ns for f in os.listdir(out)}
    assert fineweb.build_from_source(out, src, shard_tokens=SHARD, **kw) == m
    assert {f: os.stat(os.path.join(out, f)).st_mtime_ns for f in os.listdir(out)} == stamps
    with pytest.raises(ValueError, match=r"already holds a build with shard_tokens=997"):
        fineweb.build_from_source(out, src, shard_tokens=SHARD + 1, **kw)
    with pytest.raises(ValueError, match=r"split_rule"):
        fineweb.build_from_source(out, src, shard_tokens=SHARD, val_fraction=0.3, workers=0, progress=False)
    assert dir_bytes(out) == reference
    # Without progress.json only the manifest knows the build: it records the split rule too.
    os.remove(os.path.join(out, "progress.json"))
    with pytest.raises(ValueError, match=r'split_rule="blake2b-hash:0.2", not "blake2b-hash:0.3"'):
        fineweb.build_from_source(out, src, shard_tokens=SHARD, val_fraction=0.3, workers=0, progress=False)
    # A manifest from before split_rule was recorded: nothing to compare, the build stands.
    with open(os.path.join(out, "manifest.json")) as f:
        old = json.load(f)
    del old["split_rule"]
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(old, f)
    assert fineweb.build_from_source(out, src, shard_tokens=SHARD, **kw) == old


# ---- bad input: one clear line, no half-written shard ------------------------------------------

def cli_error(args, out):
    with pytest.raises(SystemExit) as e:
        fineweb.main(args + ["--out", str(out), "--quiet", "--workers", "0"])
    message = str(e.value.code)
    assert message.startswith("fineweb.py: error: ") and "\n" not in message
    leftovers = os.listdir(out) if os.path.exists(out) else []
    assert not [f for f in leftovers if f.endswith(".tmp") or f == "manifest.json"], leftovers
    # Any shard left is a whole one, recorded with its checksum for the rerun to keep.
    shards = [f for f in leftovers if f.endswith(".npy")]
    if shards:
        with open(os.path.join(out, "progress.json")) as f:
            listed = {s["file"]: s["sha256"] for sp in json.load(f)["splits"].values() for s in sp["shards"]}
        for name in shards:
            with open(os.path.join(out, name), "rb") as f:
                assert hashlib.sha256(f.read()).hexdigest() == listed[name]
    return message


def test_missing_text_column(tmp_path, docs):
    src = write_jsonl(tmp_path / "c.jsonl", docs, column="content")
    msg = cli_error(["--source", src], tmp_path / "out")
    assert "no column 'text'" in msg and "content" in msg and "--text-column" in msg


def test_empty_sources(tmp_path):
    # (no "empty" in these names: the message must say it, not just echo the path)
    (tmp_path / "zero.jsonl").write_text("")
    assert "zero.jsonl is empty: it holds no text" in cli_error(["--source", str(tmp_path / "zero.jsonl")], tmp_path / "o1")
    (tmp_path / "blank.txt").write_text("")
    assert "blank.txt is empty: it holds no text" in cli_error(["--source", str(tmp_path / "blank.txt")], tmp_path / "o2")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.md").write_text("not a supported type")
    assert "d' is empty: no .jsonl/" in cli_error(["--source", str(tmp_path / "d")], tmp_path / "o3")
    assert "no such file" in cli_error(["--source", str(tmp_path / "nope.jsonl")], tmp_path / "o4")
    (tmp_path / "lines.jsonl").write_text("\n\n  \n")
    assert "lines.jsonl is empty: it holds no text" in cli_error(["--source", str(tmp_path / "lines.jsonl")], tmp_path / "o5")
    (tmp_path / "two").mkdir()   # a folder of such files is empty too
    (tmp_path / "two" / "a.jsonl").write_text("")
    (tmp_path / "two" / "b.jsonl").write_text("\n")
    assert "two is empty: it holds no text" in cli_error(["--source", str(tmp_path / "two")], tmp_path / "o6")


def test_unreadable_files(tmp_path, docs):
    (tmp_path / "bad.parquet").write_bytes(b"this is not parquet" * 10)
    msg = cli_error(["--source", str(tmp_path / "bad.parquet")], tmp_path / "o1")
    assert f"{tmp_path / 'bad.parquet'}: not a readable parquet file (" in msg
    good = "\n".join(json.dumps({"text": d}) for d in docs[:5])
    (tmp_path / "bad.jsonl").write_text(good + '\n{"text": "unterminated\n')
    msg = cli_error(["--source", str(tmp_path / "bad.jsonl")], tmp_path / "o2")
    assert msg.endswith("bad.jsonl:6: not valid JSON: Unterminated string starting at column 10")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    msg = cli_error(["--source", str(tmp_path / "latin1.txt")], tmp_path / "o3")
    assert msg.endswith("latin1.txt:1: not UTF-8 text (byte 0xe9 at column 4)")
    (tmp_path / "x.csv").write_text("a,b\n")
    assert "unsupported file type '.csv'" in cli_error(["--source", str(tmp_path / "x.csv")], tmp_path / "o4")


def test_a_leading_null_row_is_an_error_not_a_crash(tmp_path, docs):
    """pyarrow segfaults on a JSON-lines file whose first row is null; run in a child process,
    so that if the guard ever fails, the crash shows as a failed test, not a dead test run."""
    folder = tmp_path / "src"
    folder.mkdir()
    write_jsonl(folder / "a.jsonl", docs[:5])
    (folder / "b.jsonl").write_text("\n\nnull\n" + json.dumps({"text": docs[5]}) + "\n")
    run = subprocess.run([sys.executable, os.path.join(HERE, "fineweb.py"), "--source", str(folder),
                          "--out", str(tmp_path / "out"), "--quiet", "--workers", "0"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, (run.returncode, run.stderr[-500:])
    assert run.stderr.strip().splitlines()[-1] == f"fineweb.py: error: {folder / 'b.jsonl'}:3: null, not a JSON object"


def test_bad_line_in_a_folder_is_named_by_file_and_line(tmp_path, docs):
    """pyarrow counts rows within a block and names only the folder: the error must say which
    file and which line, 1-based, as an editor shows it."""
    jl = tmp_path / "jl"
    jl.mkdir()
    write_jsonl(jl / "a.jsonl", docs[:60])
    lines = [json.dumps({"text": d}) for d in docs[60:75]]
    lines[10] = '{"text": "a tab\there is a raw control character"}'   # line 11
    (jl / "b.jsonl").write_text("\n".join(lines) + "\n")
    msg = cli_error(["--source", str(jl)], tmp_path / "o1")
    assert msg == f"fineweb.py: error: {jl / 'b.jsonl'}:11: not valid JSON: Invalid control character at column 16"

    lines[10] = json.dumps({"body": "the text is under another key"})   # a row without text
    (jl / "b.jsonl").write_text("\n".join(lines) + "\n")
    msg = cli_error(["--source", str(jl)], tmp_path / "o2")
    assert msg == f"fineweb.py: error: {jl / 'b.jsonl'}:11: no 'text' key (it has: body)"
    lines[10] = json.dumps({"text": None})
    (jl / "b.jsonl").write_text("\n".join(lines) + "\n")
    assert cli_error(["--source", str(jl)], tmp_path / "o3").endswith("b.jsonl:11: 'text' holds null, not text")

    tx = tmp_path / "tx"
    tx.mkdir()
    (tx / "a.txt").write_text("fine\n" * 3)
    (tx / "b.txt").write_bytes(b"line one\nline two\nna\xefve in Latin-1\n")
    msg = cli_error(["--source", str(tx)], tmp_path / "o4")
    assert msg == f"fineweb.py: error: {tx / 'b.txt'}:3: not UTF-8 text (byte 0xef at column 3)"

    pqs = tmp_path / "pq"
    pqs.mkdir()
    pq.write_table(pa.table({"text": docs[:5]}), pqs / "a.parquet")
    (pqs / "b.parquet").write_bytes(b"this is not parquet" * 10)
    msg = cli_error(["--source", str(pqs)], tmp_path / "o5")
    assert msg.startswith(f"fineweb.py: error: {pqs / 'b.parquet'}: not a readable parquet file (")
    pq.write_table(pa.table({"text": ["a", "b", None]}), pqs / "b.parquet")
    msg = cli_error(["--source", str(pqs)], tmp_path / "o6")
    assert msg == f"fineweb.py: error: {pqs / 'b.parquet'}: row 3: 'text' is null, not text"


def test_tokenizer_that_does_not_load(tmp_path, docs):
    src = write_jsonl(tmp_path / "c.jsonl", docs)
    (tmp_path / "broken.model").write_text("not a model")
    for spec in [str(tmp_path / "broken.model"), str(tmp_path / "missing.model")]:
        msg = cli_error(["--source", src, "--tokenizer", spec], tmp_path / "out")
        assert "cannot load tokenizer" in msg and spec in msg


def test_disk_full_leaves_no_partial_shard(tmp_path, docs, monkeypatch):
    src = write_jsonl(tmp_path / "c.jsonl", docs)
    out = tmp_path / "out"
    real_save, saved = np.save, []

    def save_then_fill_disk(f, arr, **kw):
        if len(saved) == 2:   # the third shard: half of it reaches the file, then the disk is full
            f.write(b"\x93NUMPY partial bytes")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        saved.append(1)
        return real_save(f, arr, **kw)

    monkeypatch.setattr(np, "save", save_then_fill_disk)
    msg = cli_error(["--source", src, "--shard-tokens", str(SHARD), "--val-fraction", str(VAL_FRACTION)], out)
    failed = re.search(r"cannot write \S*/((train|val)_\d{6}\.npy): No space left on device", msg).group(1)
    with open(out / "progress.json") as f:
        kept = sorted(s["file"] for sp in json.load(f)["splits"].values() for s in sp["shards"])
    assert len(kept) == 2 and failed not in kept
    assert sorted(os.listdir(out)) == sorted(kept + ["progress.json"])   # no trace of the failed one
    monkeypatch.setattr(np, "save", real_save)   # space freed: the same command finishes the job
    fineweb.main(["--source", src, "--shard-tokens", str(SHARD), "--val-fraction", str(VAL_FRACTION),
                  "--out", str(out), "--quiet", "--workers", "0"])
    with open(out / "manifest.json") as f:
        check_build(str(out), json.load(f), expected_split(docs))


def test_disk_full_at_progress_json_names_it(tmp_path, reference_build, monkeypatch):
    src, reference = reference_build
    out = tmp_path / "out"
    real, saves = files.atomic_write, []

    @contextlib.contextmanager
    def disk_full_at_second_progress(path, mode="wb"):
        with real(path, mode) as f:
            if os.path.basename(path) == "progress.json":
                saves.append(path)
                if len(saves) == 2:
                    f.write('{"config": ')   # part of it reaches the temp file, then the disk is full
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            yield f

    monkeypatch.setattr(files, "atomic_write", disk_full_at_second_progress)
    args = ["--source", src, "--shard-tokens", str(SHARD), "--val-fraction", str(VAL_FRACTION), "--out", str(out),
            "--quiet", "--workers", "0"]
    with pytest.raises(SystemExit) as e:
        fineweb.main(args)
    assert e.value.code == f"fineweb.py: error: cannot write {out / 'progress.json'}: No space left on device"
    assert not [n for n in os.listdir(out) if n.endswith(".tmp") or n == "build.lock"]
    monkeypatch.setattr(files, "atomic_write", real)   # space freed: the same command finishes the job
    fineweb.main(args)
    assert dir_bytes(str(out)) == reference


def test_a_folder_says_which_files_it_skips(tmp_path, docs, capsys):
    folder = tmp_path / "src"
    (folder / "sub").mkdir(parents=True)
    write_jsonl(folder / "a.jsonl", docs)
    for name in ["notes.md", "b.jsonl.gz", "sub/c.csv", "sub/README"]:
        (folder / name).write_text("x")
    fineweb.open_source(str(folder))
    assert capsys.readouterr().err == (f"fineweb.py: note: skipping 4 files (b.jsonl.gz, notes.md, sub/README "
                                       f"and 1 more) in {folder}: not .jsonl/.json/.parquet/.txt\n")
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "notes.md").write_text("x")
    assert cli_error(["--source", str(tmp_path / "none")], tmp_path / "o1").endswith(
        "none' is empty: no .jsonl/.json/.parquet/.txt files in it, only 1 file (notes.md)")


def test_a_lone_surrogate_becomes_u_fffd_as_in_tiktoken(tmp_path, docs):
    """JSON can escape half a UTF-16 pair ("\\ud800"), which is no Unicode text: like tiktoken's
    encode() (and bpe.py), the build makes it U+FFFD; a pair escaped whole is its character."""
    lines = [json.dumps({"text": d}) for d in docs[:30]]
    lines[5] = '{"text": "lone \\ud800 half, then a pair \\ud83d\\ude00"}'
    (tmp_path / "s.jsonl").write_text("\n".join(lines) + "\n")
    out = str(tmp_path / "out")
    m = fineweb.build_from_source(out, str(tmp_path / "s.jsonl"), **KW)
    fixed = "lone \ufffd half, then a pair 😀"
    assert ENC.encode("lone \ud800 half, then a pair \ud83d\ude00") == ENC.encode(fixed)
    got = documents_from_tokens(read_tokens(out, m, "val")) + documents_from_tokens(read_tokens(out, m, "train"))
    assert sorted(got) == sorted(docs[:5] + [fixed] + docs[6:30])
    assert sum(m["splits"][s]["bytes"] for s in ("val", "train")) == sum(len(d.encode()) for d in got)
    # In a UTF-8 file the same half pair is bytes no UTF-8 text holds: an error naming file and line.
    (tmp_path / "s.txt").write_bytes(b"fine\n\xed\xa0\x80\n")
    assert cli_error(["--source", str(tmp_path / "s.txt")], tmp_path / "o1").endswith(
        "s.txt:2: not UTF-8 text (byte 0xed at column 1)")


def test_bad_flags(tmp_path, docs):
    src = write_jsonl(tmp_path / "c.jsonl", docs)
    assert "between 0 and 1" in cli_error(["--source", src, "--val-fraction", "1.5"], tmp_path / "o1")
    assert "positive" in cli_error(["--source", src, "--shard-tokens", "0"], tmp_path / "o2")
    assert "exactly one document" in cli_error(["--source", src, "--val-from", "tail"], tmp_path / "o3")
    assert "val split got no documents" in cli_error(["--source", src, "--val-fraction", "1e-9"], tmp_path / "o4")
