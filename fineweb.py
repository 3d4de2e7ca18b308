"""fineweb.py: turn a text corpus into token shards that train_gpt2.py trains on.

    python fineweb.py                                  # FineWeb-Edu sample-10BT (~10B tokens, needs internet)
    python fineweb.py --source pydocs                  # Python's own docs: ~2.5 MB, no network, seconds
    python fineweb.py --source my_corpus/ --tokenizer my.model --out data/mine

What it does, top to bottom in this file:
  1. Sources: a stream of documents (strings) from FineWeb-Edu or any Hugging Face dataset
     (streamed by `datasets`, so the 20 GB default never sits on disk), local
     .jsonl/.json/.parquet/.txt files or folders (read here, line by line or batch by batch),
     or the embedded `pydocs` corpus.
  2. Val/train split: a document goes to val when a hash of its text falls below
     --val-fraction. This is deterministic, spreads val over the whole corpus, and puts exact
     duplicates in the same split, so the same text can never be both trained on and evaluated.
  3. Tokenizing: worker processes encode big batches of documents with tiktoken's Rust encoder
     straight into numpy arrays (no per-token Python objects), each document as [eot] + tokens.
  4. Shards: the token stream of each split is cut into files of exactly --shard-tokens tokens
     (the last one shorter), `{split}_{index:06d}.npy`, written atomically, sha256 recorded.
  5. Resume: after every shard a small progress.json records where each split stands in the
     document stream, and a fingerprint of the source; a rerun after a crash checks the source
     is unchanged, re-reads the stream, skips what is on disk and produces byte-identical shards.
     manifest.json is written last (the format: shard_format.py, and README, "The shard format").
     A lock file refuses a second build into the same folder while one runs.
"""
import argparse
import ast
import glob
import hashlib
import itertools
import json
import multiprocessing
import os
import re
import signal
import sys
import sysconfig
import time
from collections import deque

import numpy as np

import bpe
import files
import shard_format
from errors import fail, json_error, one_line

# Defaults of the 124M reproduction (Karpathy's build-nanogpt uses the same dataset and shard size).
FINEWEB_REPO = "HuggingFaceFW/fineweb-edu"
FINEWEB_CONFIG = "sample-10BT"
DEFAULT_SHARD_TOKENS = 100_000_000   # 200 MB per uint16 shard: big files, yet many per epoch
DEFAULT_VAL_FRACTION = 0.01          # 1% of 10B tokens = ~100M val tokens, as in build-nanogpt

SOURCE_ALIASES = {"fineweb-edu": f"hf:{FINEWEB_REPO}:{FINEWEB_CONFIG}"}
# Documents of Hub sources whose size is known, for the progress bar's total and ETA. sample-10BT:
# 9,672,101 rows, as counted by a script that loaded it whole (the Hub's dataset viewer shows
# ~9.67M rows; the dataset card states only "~10B GPT-2 tokens"). Approximate on purpose: should
# the Hub's copy change, only the ETA is off, never the shards.
HUB_DOCUMENTS = {f"{FINEWEB_REPO}:{FINEWEB_CONFIG}": 9_672_101}
PYDOCS = "pydocs"
# Which reader takes which local file type. A .txt file is ONE document (a book, an article);
# reading it line by line would make every line a document with its own eot.
LOCAL_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".txt": "text"}

TASK_CHARS = 1 << 20      # ~1 MB of text per worker task: IPC and Python overhead become noise
READ_BATCH = 256          # rows per batch pulled from a `datasets` stream
# fineweb.py's own resume record, beside the shards; the shard format itself (file names,
# manifest.json, dtypes, split rules) is shard_format.py's.
PROGRESS = "progress.json"
# Held (files.hold_lock) for a build's life, then deleted: its pid names the build that owns the folder.
LOCK = "build.lock"
# How much of each end of a local file its fingerprint hashes (see _file_fingerprint).
FINGERPRINT_ENDS = 1 << 20
# What a build writes through files.atomic_write, so what a killed build may leave temp files of.
BUILD_FILES = f"{shard_format.SHARD_NAME_PATTERN}|{re.escape(shard_format.MANIFEST)}|{re.escape(PROGRESS)}"


# ----------------------------------------------------------------------------------------------
# 1. Sources: each is a name (recorded in the manifest) and an iterator of document strings.

class Source:
    def __init__(self, name, documents, total=None, unit=None, fingerprint=None):
        self.name = name              # e.g. "HuggingFaceFW/fineweb-edu:sample-10BT" or a path
        self._documents = documents   # function(this Source) returning an iterator of str
        self.total = total            # the source's size in `unit` ("B" of files, " docs"), if known
        self.unit = unit
        self.done = 0                 # how much of `total` the reader has got through (it sets it)
        self._fingerprint = fingerprint

    def documents(self):
        self.done = 0
        return self._documents(self)

    def fingerprint(self):
        """What identifies the content, recorded in progress.json and compared when a build resumes.
        Without a function for it, the name: a Hub dataset is its repo:config (streamed at the
        Hub's current revision), pydocs is deterministic for the Python version its name holds."""
        return self._fingerprint() if self._fingerprint else {"name": self.name}


def pydocs_documents():
    """The embedded corpus: Python's documentation topics, then one document per stdlib module
    holding its module, class and function docstrings. Read from files with `ast`, never by
    importing (importing e.g. `antigravity` opens a web browser). Deterministic for a given
    Python version: topics sorted by name, modules sorted by dotted name."""
    try:
        from pydoc_data.topics import topics
    except ImportError:   # some distributions split pydoc_data off; the docstrings remain
        topics = {}
    for name in sorted(topics):
        yield topics[name]
    for module, path in stdlib_modules():
        text = _module_docstrings(module, path)
        if text:
            yield text


def stdlib_modules():
    """(dotted name, file) of the standard library's .py files, tests and third-party excluded."""
    root = sysconfig.get_paths()["stdlib"]
    skip = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
    found = []
    for directory, subdirs, names in os.walk(root):
        subdirs[:] = [d for d in subdirs if d not in skip and not d.startswith(".")]
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                module = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
                found.append((module.removesuffix(".__init__"), path))
    return sorted(found)


def _module_docstrings(module, path):
    try:
        with open(path, "rb") as f:
            tree = ast.parse(f.read())
    except (OSError, SyntaxError, ValueError):
        return ""   # an odd file (e.g. Python 2 syntax in a data folder) just contributes nothing
    parts = []

    def visit(node, qualname):
        doc = ast.get_docstring(node, clean=True)
        if doc:
            parts.append(f"{qualname}\n{doc}")
        for child in node.body:
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(child, f"{qualname}.{child.name}")

    visit(tree, module)
    if parts and not parts[0].startswith(module + "\n"):
        parts.insert(0, module)   # every document opens with its module's name
    return "\n\n".join(parts)


def _local_files(spec):
    """The files a local source names (a file, a folder searched recursively, or a glob),
    checked to exist, be readable and be of one supported type. Returns (format, paths, the
    files of a folder left out for their type)."""
    skipped = []
    if any(ch in spec for ch in "*?["):
        paths = sorted(f for f in glob.glob(spec, recursive=True) if os.path.isfile(f))
    elif os.path.isdir(spec):
        found = sorted(os.path.join(d, f) for d, _, names in os.walk(spec) for f in names)
        paths = [f for f in found if os.path.splitext(f)[1].lower() in LOCAL_FORMATS]
        skipped = [f for f in found if os.path.splitext(f)[1].lower() not in LOCAL_FORMATS]
    elif os.path.exists(spec):
        paths = [spec]
    else:
        raise ValueError(f"source {spec!r}: no such file or folder (or use fineweb-edu, pydocs, hf:REPO[:CONFIG])")
    if not paths:
        raise ValueError(f"source {spec!r} is empty: no {'/'.join(LOCAL_FORMATS)} files in it"
                         + (f", only {_some_files(spec, skipped)}" if skipped else ""))
    formats = set()
    for path in paths:
        ext = os.path.splitext(path)[1].lower()
        if ext not in LOCAL_FORMATS:
            raise ValueError(f"{path}: unsupported file type {ext or '(none)'!r}; use {', '.join(LOCAL_FORMATS)}")
        formats.add(LOCAL_FORMATS[ext])
        try:
            with open(path, "rb") as f:
                f.read(1)
        except OSError as e:
            raise ValueError(f"cannot read {path}: {e.strerror}") from None
    if len(formats) > 1:
        raise ValueError(f"source {spec!r} mixes file types ({', '.join(sorted(formats))}); give one type per run")
    return formats.pop(), paths, skipped


def _some_files(folder, paths, shown=3):
    """"2 files (a.md, b.csv)" or "7 files (a.md, b.csv, c.png and 4 more)", named within folder."""
    names = ", ".join(os.path.relpath(p, folder) for p in paths[:shown])
    more = f" and {len(paths) - shown} more" if len(paths) > shown else ""
    return f"{len(paths)} file{'s' if len(paths) > 1 else ''} ({names}{more})"


def _file_fingerprint(path):
    """A local file's size, modification time and the sha256 of its first and last MB.

    Size and time catch an edit made in place, anywhere in the file (rows appended, the file
    rewritten); the hash catches another file copied in with the old one's times (cp -p,
    rsync -t). Only the ends are hashed: a resumed build of a many-GB corpus then starts at once,
    where hashing it whole would take minutes on every start."""
    stat = os.stat(path)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        digest.update(f.read(FINGERPRINT_ENDS))
        if stat.st_size > FINGERPRINT_ENDS:
            f.seek(max(FINGERPRINT_ENDS, stat.st_size - FINGERPRINT_ENDS))
            digest.update(f.read(FINGERPRINT_ENDS))
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "ends_sha256": digest.hexdigest()}


def _what_changed(old, new):
    """The first difference between two source fingerprints, in words."""
    old_files, new_files = old.get("files", {}), new.get("files", {})
    for path in sorted(old_files.keys() | new_files.keys()):
        if path not in new_files:
            return f"{path} was removed from the source"
        if path not in old_files:
            return f"{path} was added to the source"
        for key, what in (("size", "size"), ("mtime_ns", "modification time"), ("ends_sha256", "content")):
            if old_files[path].get(key) != new_files[path].get(key):
                return f"{path} changed (its {what})"
    return f"the source changed (from {json.dumps(old)} to {json.dumps(new)})"


class _NoTextColumn(ValueError):
    """A row, or a parquet file, without the text column. On the source's very first row it
    means the wrong --text-column and is said so; after that it is one bad row."""

    def __init__(self, message, columns):
        super().__init__(message)
        self.columns = columns


def _local_documents(label, fmt, paths, text_column, source):
    """The documents of local files, file after file in sorted path order, read right here
    rather than through `datasets`: its import alone costs about a second, pulls in torch
    when streaming, and its errors do not say which file and line is bad. Ours do.
    source.done follows the bytes read, all files together: each reader calls at(the bytes of
    its file read so far)."""
    read = {"json": _json_documents, "parquet": _parquet_documents, "text": _text_documents}[fmt]
    documents, before = 0, 0   # bytes of the files already read

    def at(nbytes):   # a reader's bytes read in its file
        source.done = before + nbytes

    try:
        for path in paths:
            for text in read(path, text_column, at):
                documents += 1
                yield text
            before += os.path.getsize(path)   # all of it, also when no row moved at() (an empty array)
            source.done = before
    except _NoTextColumn as e:
        if documents or not e.columns:
            raise
        raise ValueError(f"{label} has no column {text_column!r} (it has: {', '.join(e.columns)}); "
                         f"choose one with --text-column") from None


def _text_documents(path, text_column, at):
    """A .txt file is one document (text_column does not apply), its newlines made "\\n", as
    text mode reads them and `datasets` did: a corpus sharded before and after this reader was
    written gives the same bytes."""
    with open(path, "rb") as f:
        data = f.read()
    text = _decode_utf8(data, path)
    at(len(data))
    yield text.replace("\r\n", "\n").replace("\r", "\n")


def _decode_utf8(data, path, line=1):
    """data as text, or a one-line error naming the file, the line and the column of the first
    byte that is not UTF-8 (`line` is the number of data's first line in the file)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line += data.count(b"\n", 0, e.start)
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise ValueError(f"{path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x} at column {column})") from None


def _json_documents(path, text_column, at):
    """The text of each row of a JSON-lines file (one object per line, blank lines skipped),
    or of a .json file that holds one JSON array: of row objects, or of strings (each string
    a document), the two kinds of .json file that `datasets` reads as rows. A lone surrogate
    escaped in JSON ("\\ud800") stays in the text; tokenizing makes it U+FFFD, as tiktoken does."""
    with open(path, "rb") as f:
        if path.lower().endswith(".json") and f.read(4096).removeprefix(b"\xef\xbb\xbf").lstrip().startswith(b"["):
            f.seek(0)
            yield from _json_array_documents(path, f.read(), text_column, at)
            return
        f.seek(0)
        done = 0
        for number, raw in enumerate(f, 1):
            done += len(raw)
            at(done)
            line = _decode_utf8(raw, path, number)
            if number == 1:
                line = line.removeprefix("\ufeff")   # a byte-order mark is not part of the row
            if not line.strip():
                continue
            try:
                row = json.loads(line.rstrip("\r\n"))   # its line break would read as part of a broken string
            except ValueError as e:   # e.msg reads "Expecting ',' delimiter", "Invalid control character at"
                hint = "; a .json file holds JSON lines or one JSON array" if path.lower().endswith(".json") else ""
                raise ValueError(f"{path}:{number}: not valid JSON: {json_error(e)}{hint}") from None
            yield _row_text(row, text_column, f"{path}:{number}")


def _json_array_documents(path, data, text_column, at):
    """The documents of a .json file holding one array (data: the whole file, read at once, as
    `datasets` reads it too: a JSON document cannot be parsed in pieces); at() moves through
    the file's bytes in step with its items."""
    text = _decode_utf8(data, path).removeprefix("\ufeff")
    try:
        rows = json.loads(text)
    except ValueError as e:
        raise ValueError(f"{path}:{e.lineno}: not valid JSON: {json_error(e)}") from None
    for number, row in enumerate(rows, 1):
        at(len(data) * number // len(rows))
        yield row if isinstance(row, str) else _row_text(row, text_column, f"{path}: item {number}")


_JSON_TYPES = {dict: "an object", list: "an array", int: "a number", float: "a number",
               bool: "true/false", type(None): "null", str: "a string"}


def _row_text(row, text_column, where):
    """The text of one parsed JSON row; `where` ("file:line") names it in the error if it has none."""
    if not isinstance(row, dict):
        raise ValueError(f"{where}: {_JSON_TYPES.get(type(row), 'a value')}, not a JSON object")
    if text_column not in row:
        raise _NoTextColumn(f"{where}: no {text_column!r} key" + (f" (it has: {', '.join(row)})" if row else ""),
                            list(row))
    text = row[text_column]
    if not isinstance(text, str):
        raise ValueError(f"{where}: {text_column!r} holds {_JSON_TYPES.get(type(text), 'a value')}, not text")
    return text


def _parquet_documents(path, text_column, at):
    """The text column of a .parquet file, batch by batch (only that column is read); at()
    moves through the file's bytes in step with its rows."""
    import pyarrow as pa   # imported here: only parquet sources need pyarrow
    import pyarrow.parquet as pq

    def unreadable(e):
        return ValueError(f"{path}: not a readable parquet file ({one_line(e)})")

    try:
        parquet = pq.ParquetFile(path)
    except Exception as e:   # pyarrow raises ArrowInvalid, OSError, ... for a damaged file
        raise unreadable(e) from None
    schema = parquet.schema_arrow
    if text_column not in schema.names:
        raise _NoTextColumn(f"{path} has no column {text_column!r} (it has: {', '.join(schema.names)}); "
                            f"choose one with --text-column", schema.names)
    kind = schema.field(text_column).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise ValueError(f"{path}: column {text_column!r} holds {kind}, not text")
    batches, row = parquet.iter_batches(columns=[text_column]), 0
    size, rows = os.path.getsize(path), max(parquet.metadata.num_rows, 1)
    while True:
        try:
            batch = next(batches, None)   # reading a batch is what finds a damaged page
        except Exception as e:
            raise unreadable(e) from None
        if batch is None:
            return
        at(size * (row + batch.num_rows) // rows)
        for text in batch.column(0).to_pylist():
            row += 1
            if text is None:
                raise ValueError(f"{path}: row {row}: {text_column!r} is null, not text")
            yield text


def _dataset_documents(label, text_column, load_args, load_kwargs, source):
    """Documents of a Hugging Face Hub dataset, streamed by `datasets` (the 20 GB default never
    sits on disk). source.done follows the rows read."""
    import datasets  # imported here: about a second, and only Hub sources need it
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)   # we report its errors, in one line
    try:
        stream = datasets.load_dataset(*load_args, split="train", streaming=True, **load_kwargs)
        features = stream.features
    except Exception as e:   # no network, no such dataset or config, ...
        raise ValueError(f"cannot read {label}: {one_line(e)}") from None
    if features is not None:   # a known schema: check the column now, and read only it
        _check_column(label, text_column, features)
        stream = stream.select_columns([text_column])
    batches = iter(stream.iter(batch_size=READ_BATCH))
    row = 0
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except Exception as e:   # a broken file on the Hub, the network gone mid-stream, ...
            raise ValueError(f"cannot read {label} (after {row} rows): {one_line(e)}") from None
        _check_column(label, text_column, batch)
        for text in batch[text_column]:
            if not isinstance(text, str):
                raise ValueError(f"{label}: row {row + 1}: column {text_column!r} holds "
                                 f"{type(text).__name__}, not text")
            row += 1
            source.done = row
            yield text


def _check_column(label, text_column, columns):
    if text_column not in columns:
        raise ValueError(f"{label} has no column {text_column!r} (it has: {', '.join(columns)}); "
                         f"choose one with --text-column")


def open_source(spec, text_column="text"):
    """Resolve a --source spec to a Source; local files are checked here, before any work."""
    spec = SOURCE_ALIASES.get(spec, spec)
    if spec == PYDOCS:
        return Source(f"pydocs:python-{sys.version.split()[0]}", lambda source: pydocs_documents())
    if spec.startswith("hf:"):
        repo, _, config = spec[3:].partition(":")
        kwargs = {"name": config} if config else {}
        name = f"{repo}:{config}" if config else repo
        return Source(name, lambda source: _dataset_documents(name, text_column, (repo,), kwargs, source),
                      HUB_DOCUMENTS.get(name), " docs")
    fmt, paths, skipped = _local_files(spec)
    if skipped:   # said, not silent: a folder of .jsonl.gz files would otherwise lose them unnoticed
        print(f"fineweb.py: note: skipping {_some_files(spec, skipped)} in {spec}: not {'/'.join(LOCAL_FORMATS)}",
              file=sys.stderr)
    name = os.path.abspath(spec)
    return Source(name, lambda source: _local_documents(name, fmt, paths, text_column, source),
                  sum(os.path.getsize(p) for p in paths), "B",
                  lambda: {"files": {os.path.abspath(p): _file_fingerprint(p) for p in paths}})


# ----------------------------------------------------------------------------------------------
# 2. Which split each document goes to.

def _hash_fraction(text):
    """A deterministic number in [0, 1) from the document's bytes (Python's hash() is salted)."""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def split_by_hash(documents, val_fraction):
    """(split, text) pairs: val when the text's hash falls below val_fraction, else train."""
    for text in documents:
        yield ("val" if _hash_fraction(text) < val_fraction else "train"), text


def split_given(train_documents, val_documents):
    """(split, text) pairs for a caller that already split its data: all val, then all train."""
    for text in val_documents:
        yield "val", text
    for text in train_documents:
        yield "train", text


def split_by_bytes(text, val_fraction):
    """Cut one text into (train, val): the first (1 - val_fraction) of its UTF-8 bytes train,
    the rest val (e.g. tinyshakespeare's 90/10), moved back to a character boundary."""
    data = text.encode("utf-8")
    cut = round(len(data) * (1.0 - val_fraction))
    while 0 < cut < len(data) and (data[cut] & 0xC0) == 0x80:   # inside a multi-byte character
        cut -= 1
    # An empty side would still be one "document" (a lone eot): a val loss of nothing, silently.
    for side, part in (("train", data[:cut]), ("val", data[cut:])):
        if not part:
            raise ValueError(f"val fraction {val_fraction} of a {len(data)}-byte text leaves the {side} "
                             f"part empty; use a longer text or another --val-fraction")
    return data[:cut].decode("utf-8"), data[cut:].decode("utf-8")


# ----------------------------------------------------------------------------------------------
# 3. Tokenizing: a task is a list of texts; the answer is one array of [eot] + tokens per text,
#    concatenated, plus each text's token count (eot included) and UTF-8 byte count.

_worker_tokenizer = None


def _init_worker(tokenizer):
    global _worker_tokenizer
    _worker_tokenizer = tokenizer   # pickled across (tiktoken's GPT-2 by name, others in full)
    # Ctrl-C reaches every process of the terminal's group: the parent alone handles it (one
    # line, then it stops the pool); a worker would print a traceback of its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def tokenize_documents(texts, tokenizer, dtype):
    """Encode texts into one flat array, each as [eot] + tokens; returns (tokens, lengths, nbytes).

    encode_to_numpy with no special tokens allowed or disallowed is encode_ordinary (a literal
    "<|endoftext|>" inside a document stays plain text) but returns a numpy buffer, skipping a
    Python int per token."""
    encoded = []
    for i, text in enumerate(texts):
        try:
            encoded.append(tokenizer.encoding.encode_to_numpy(text, allowed_special=set(), disallowed_special=()))
        except UnicodeEncodeError:   # lone surrogates (e.g. from JSON "\ud800"): replaced as
            texts[i] = bpe.replace_surrogates(text)   # tiktoken's encode() and bpe.py's encoder do
            encoded.append(tokenizer.encoding.encode_to_numpy(texts[i], allowed_special=set(), disallowed_special=()))
    lengths = np.array([len(a) + 1 for a in encoded], dtype=np.int64)
    out = np.empty(int(lengths.sum()), dtype=dtype)
    start = 0
    for a, n in zip(encoded, lengths):
        out[start] = tokenizer.eot_id
        out[start + 1:start + n] = a
        start += n
    nbytes = np.array([len(t.encode("utf-8")) for t in texts], dtype=np.int64)
    return out, lengths, nbytes


def _tokenize_task(task):
    meta, texts, dtype = task
    return (meta,) + tokenize_documents(list(texts), _worker_tokenizer, dtype)


# ----------------------------------------------------------------------------------------------
# 4. Shards: each split fills a buffer of exactly shard_tokens tokens and writes it when full.

class _SplitWriter:
    """One split's shard buffer, counters, and where it stands in the document stream.

    `resume` = [doc, offset]: shards on disk hold this split's documents before stream index
    `doc` and the first `offset` tokens (eot included) of document `doc` itself."""

    def __init__(self, out_dir, split, shard_tokens, dtype, state=None, on_shard=lambda: None):
        state = state or {"documents": 0, "bytes": 0, "shards": [], "resume": [-1, 0]}
        self.on_shard = on_shard   # called after each full shard is on disk (to save progress)
        self.out_dir, self.split, self.shard_tokens = out_dir, split, shard_tokens
        self.documents, self.bytes = state["documents"], state["bytes"]
        self.shards = [dict(s) for s in state["shards"]]
        self.resume = list(state["resume"])
        # Counters as of `resume`: the live ones run ahead (documents whose tokens still sit in the
        # buffer), and a resumed run would count those documents again.
        self.counted_at_resume = (self.documents, self.bytes)
        self.buffer = np.empty(shard_tokens, dtype=dtype)
        self.fill = 0

    def state(self):
        documents, nbytes = self.counted_at_resume
        return {"documents": documents, "bytes": nbytes, "shards": self.shards, "resume": self.resume}

    def add(self, docs, tokens, lengths, nbytes, skip=0):
        """Append documents (stream indices `docs`, ascending) whose [eot] + tokens are
        concatenated in `tokens`, `lengths[i]` each. The first `skip` tokens of the first
        document are already on disk (a resumed run): they are dropped and it is not counted
        again. Works per shard, not per document or token: numpy does the copying."""
        ends = np.cumsum(lengths)
        counted = np.ones(len(docs), dtype=bool)
        counted[0] = skip == 0
        documents_so_far = self.documents + np.cumsum(counted)           # after each document
        bytes_so_far = self.bytes + np.cumsum(np.where(counted, nbytes, 0))
        pos = skip
        while pos < len(tokens):
            take = min(len(tokens) - pos, self.shard_tokens - self.fill)
            self.buffer[self.fill:self.fill + take] = tokens[pos:pos + take]
            self.fill += take
            pos += take
            if self.fill == self.shard_tokens:
                self.flush()
                j = int(np.searchsorted(ends, pos - 1, side="right"))   # document of the last token
                self.resume = [int(docs[j]), int(pos - (ends[j] - lengths[j]))]
                self.counted_at_resume = (int(documents_so_far[j]), int(bytes_so_far[j]))
                self.on_shard()
        self.documents, self.bytes = int(documents_so_far[-1]), int(bytes_so_far[-1])

    def flush(self):
        if self.fill == 0:
            return
        name = shard_format.shard_name(self.split, len(self.shards))
        sha = shard_format.write_shard(os.path.join(self.out_dir, name), self.buffer[:self.fill])
        self.shards.append({"file": name, "tokens": self.fill, "sha256": sha})
        self.fill = 0

    def finish(self, stream_end):
        """Write the last (short) shard; then every document of this split before stream index
        `stream_end` (the end of the stream) is on disk, and the saved state must say so: a
        rerun from it (say, its manifest.json was lost) has to skip them all, not write them again."""
        self.flush()
        self.resume = [stream_end, 0]
        self.counted_at_resume = (self.documents, self.bytes)

    def summary(self):
        tokens = sum(s["tokens"] for s in self.shards)
        return {"documents": self.documents, "tokens": tokens, "bytes": self.bytes,
                "bytes_per_token": self.bytes / tokens if tokens else 0.0, "shards": self.shards}


# ----------------------------------------------------------------------------------------------
# 5. The pipeline: stream -> tasks -> workers (in order) -> split writers -> manifest.

def _load_previous(out_dir, config, fingerprint):
    """The saved state of an earlier run with the same config (None if none); an error if the
    folder holds a build of something else, or an unfinished one of a source that has changed
    since (`fingerprint`: the source's now; None: not known). Returns (state, complete)."""
    progress_path, manifest_path = os.path.join(out_dir, PROGRESS), os.path.join(out_dir, shard_format.MANIFEST)
    previous = None
    if os.path.exists(progress_path):
        previous = _read_build_json(progress_path, out_dir)
        old = previous.get("config", {})
    elif os.path.exists(manifest_path):
        manifest = _read_build_json(manifest_path, out_dir)
        old = {k: manifest.get(k) for k in config}
        if "split_rule" not in manifest:   # written before manifests recorded it: nothing to check
            del old["split_rule"]
    else:
        return None, False
    for key, value in config.items():
        if key in old and old[key] != value:
            raise ValueError(f"{out_dir} already holds a build with {key}={json.dumps(old[key])}, not "
                             f"{json.dumps(value)}; use another --out or delete that folder")
    complete = os.path.exists(manifest_path)
    if previous is None or complete:
        return None, complete
    old = previous.get("source_fingerprint")   # absent: saved before fingerprints were, or not known
    if old is not None and fingerprint is not None and old != fingerprint:
        raise ValueError(f"{_what_changed(old, fingerprint)} since the build in {out_dir} began, so resuming "
                         f"would mix old and new text; to start over, delete {out_dir} or pass another --out")
    # The shards we keep must be exactly the ones recorded: their checksums go in the manifest.
    for split in shard_format.SPLITS:
        for shard in previous["splits"][split]["shards"]:
            path = os.path.join(out_dir, shard["file"])
            try:
                kept = files.file_sha256(path) == shard["sha256"]
            except OSError:   # missing or unreadable: not the shard recorded either
                kept = False
            if not kept:
                raise ValueError(f"{path} is missing or differs from the shard {progress_path} "
                                 f"records; delete {out_dir} and start again")
    return previous, False


def _read_build_json(path, out_dir):
    """progress.json or manifest.json of an earlier build; a damaged one cannot be resumed from."""
    return files.read_json(path, advice=f"delete {out_dir} and start again")


def _write_build_json(path, obj):
    """progress.json or manifest.json, atomically; a failure (a full disk) names the file."""
    try:
        files.write_json(path, obj)
    except OSError as e:
        raise OSError(e.errno, f"cannot write {path}: {os.strerror(e.errno) if e.errno else one_line(e)}") from None


class _StopBuild(Exception):
    """Raised to stop a build after `stop_after_shards` shards (a crash, for tests)."""


def build_shards(out_dir, labeled_documents, tokenizer="gpt2", source="custom", *, split_rule,
                 shard_tokens=DEFAULT_SHARD_TOKENS, workers=None, progress=True, stop_after_shards=None):
    """Tokenize (split, text) pairs into shards + manifest in out_dir; resumes an earlier run.

    labeled_documents must yield the same sequence on every run (that is what makes resuming
    exact); split_rule is a string describing how it was split, recorded in the manifest and
    checked when the folder is built again. source: the documents' name, or the Source they
    come from, which adds its total to the progress line and its fingerprint to resume checks.
    stop_after_shards: stop (without a manifest, like a crash) once that many shards were
    written in this call; for tests of resuming. Returns the manifest dict."""
    if isinstance(tokenizer, str):
        try:
            tokenizer = bpe.load_tokenizer(tokenizer)
        except ValueError as e:   # load_tokenizer's errors are one-line UserErrors
            raise ValueError(f"cannot load tokenizer {tokenizer!r}: {e}") from None
    if shard_tokens < 1:
        raise ValueError(f"shard_tokens must be positive, got {shard_tokens}")
    dtype = shard_format.dtype_for(tokenizer.vocab_size)
    name = source.name if isinstance(source, Source) else source
    config = {"format": shard_format.FORMAT, "version": shard_format.VERSION, "source": name,
              "tokenizer": {"spec": tokenizer.spec, "identity": tokenizer.identity,
                            "vocab_size": tokenizer.vocab_size, "eot_id": tokenizer.eot_id},
              "dtype": np.dtype(dtype).name, "shard_tokens": shard_tokens, "split_rule": split_rule}
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise OSError(e.errno, f"cannot create {out_dir}: {e.strerror}") from None
    # Two builds into one folder would delete each other's temp files and overwrite each other's
    # progress.json: the second is refused.
    try:
        lock = files.hold_lock(out_dir, LOCK, f"{out_dir} is in use by another build (pid {{pid}}); "
                                              "wait for it to end, or pass another --out")
    except OSError as e:
        raise OSError(e.errno, f"cannot write in {out_dir}: {e.strerror}") from None
    try:
        return _build_locked(out_dir, labeled_documents, tokenizer, source, config, dtype, shard_tokens,
                             workers, progress, stop_after_shards)
    finally:
        files.release_lock(lock)


def _build_locked(out_dir, labeled_documents, tokenizer, source, config, dtype, shard_tokens, workers, progress,
                  stop_after_shards):
    """build_shards' work, once out_dir is this process's."""
    name, split_rule = config["source"], config["split_rule"]
    files.remove_temp_files(out_dir, BUILD_FILES)   # a killed run's, e.g. ".train_000003.npy.x8f2.tmp"
    manifest_path = os.path.join(out_dir, shard_format.MANIFEST)
    # Only a build still to do needs the source's fingerprint (it reads a little of every file).
    fingerprint = None
    if isinstance(source, Source) and not os.path.exists(manifest_path):
        fingerprint = source.fingerprint()
    previous, complete = _load_previous(out_dir, config, fingerprint)
    if complete:
        if progress:
            print(f"{manifest_path} exists: this build is complete, nothing to do", file=sys.stderr)
        return _read_build_json(manifest_path, out_dir)
    states = previous["splits"] if previous else {}
    written = 0

    def shard_done():
        nonlocal written
        state = {"config": config, "splits": {s: w.state() for s, w in writers.items()}}
        if fingerprint is not None:
            state["source_fingerprint"] = fingerprint
        _write_build_json(os.path.join(out_dir, PROGRESS), state)
        written += 1
        if stop_after_shards is not None and written >= stop_after_shards:
            raise _StopBuild

    writers = {s: _SplitWriter(out_dir, s, shard_tokens, dtype, states.get(s), shard_done)
               for s in shard_format.SPLITS}
    # Fixed at start: which stream positions are already on disk, split by split.
    resume = {s: tuple(w.resume) for s, w in writers.items()}
    skip_until = max(doc for doc, _ in resume.values())   # the stream's documents a resumed run passes over

    stream_end = 0   # how many documents the stream held, once tasks() has read it all

    def tasks():
        """Batches of the documents still to tokenize, with (index, split, skip) for each."""
        nonlocal stream_end
        meta, texts, chars = [], [], 0
        for index, (split, text) in enumerate(labeled_documents):
            stream_end = index + 1
            if index < skip_until:
                bar.skipping(index + 1, skip_until)
            doc, offset = resume[split]
            if index < doc:
                continue                  # wholly inside shards on disk: not even tokenized
            meta.append((index, shard_format.SPLITS.index(split), offset if index == doc else 0))
            texts.append(text)
            chars += len(text)
            if chars >= TASK_CHARS:
                yield np.array(meta, dtype=np.int64), texts, dtype
                meta, texts, chars = [], [], 0
        if texts:
            yield np.array(meta, dtype=np.int64), texts, dtype

    bar = _ProgressBar(progress, source if isinstance(source, Source) else None)
    results = _run_tasks(tasks(), tokenizer, workers)
    try:
        for meta, tokens, lengths, nbytes in results:
            index, code, skip = meta.T
            for c, split in enumerate(shard_format.SPLITS):   # each split's documents of this batch, in order
                mine = code == c
                if mine.all():
                    writers[split].add(index, tokens, lengths, nbytes, int(skip[0]))
                elif mine.any():
                    first = int(np.argmax(mine))
                    writers[split].add(index[mine], tokens[np.repeat(mine, lengths)], lengths[mine],
                                       nbytes[mine], int(skip[first]))
            bar.update(len(index), int(lengths.sum()))
    except _StopBuild:
        return None
    finally:
        results.close()   # stops the worker pool now, also on errors
        bar.close()
    if sum(w.documents for w in writers.values()) == 0 or sum(w.bytes for w in writers.values()) == 0:
        raise ValueError(f"source {name} is empty: it holds no text")
    for split, w in writers.items():
        if w.documents == 0:
            raise ValueError(f"the {split} split got no documents from {name} "
                             f"({split_rule}); use a larger corpus or another --val-fraction")
    for w in writers.values():
        w.finish(stream_end)
    stop_after_shards = None
    shard_done()   # the final state, with the last (short) shards
    manifest = dict(config)   # split_rule too: a rerun with another val rule is refused, progress.json or not
    manifest["splits"] = {s: w.summary() for s, w in writers.items()}
    _write_build_json(manifest_path, manifest)   # last: its presence means every shard is complete
    return manifest


def _run_tasks(tasks, tokenizer, workers):
    """Yield _tokenize_task results in task order. Tasks are read in this (main) thread and at
    most 2 per worker are in flight, so memory stays bounded on a 20 GB stream."""
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if workers <= 0:   # in-process: for tiny corpora and debugging
        global _worker_tokenizer
        _worker_tokenizer = tokenizer
        yield from map(_tokenize_task, tasks)
        return
    with multiprocessing.Pool(workers, initializer=_init_worker, initargs=(tokenizer,)) as pool:
        pending = deque()
        for task in tasks:
            pending.append(pool.apply_async(_tokenize_task, (task,)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


class _ProgressBar:
    """The tqdm progress line. For a source of known size (local files: bytes; FineWeb-Edu:
    documents) it goes through that total and shows an ETA; otherwise it counts tokens. Rates
    of documents (and tokens) ride beside it."""

    def __init__(self, enabled, source=None):
        self.bar, self.source = None, source if source is not None and source.total else None
        self.docs, self.tokens, self.start, self.shown = 0, 0, time.perf_counter(), 0.0
        if enabled:
            from tqdm import tqdm
            self.sizeof = tqdm.format_sizeof
            if self.source:
                line = ("{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt}{unit} "
                        "[{elapsed}, ETA {remaining}, {rate_fmt}{postfix}]")
                self.bar = tqdm(total=self.source.total, unit=self.source.unit, unit_scale=True, desc="tokenizing",
                                dynamic_ncols=True, bar_format=line)
            else:
                self.bar = tqdm(unit="tok", unit_scale=True, desc="tokenizing", dynamic_ncols=True)

    def _follow_source(self):
        done = self.source.done
        if done > self.bar.total:   # more than a Hub dataset's documented count: the total was approximate
            self.bar.total = done
        self.bar.update(done - self.bar.n)

    def skipping(self, passed, total):
        """A resumed build reads past the documents already in shards (minutes, for 10B tokens):
        show how far, twice a second at most, and always the last one."""
        if self.bar is None or (passed < total and time.perf_counter() - self.shown < 0.5):
            return
        self.shown = time.perf_counter()
        self.bar.set_description_str(f"skipping finished work: {passed:,} of {total:,} documents", refresh=False)
        if self.source:
            self._follow_source()
        self.bar.refresh()
        if passed == total:
            self.bar.set_description_str("tokenizing", refresh=False)
            self.start = time.perf_counter()   # the rates are of tokenizing, not of skipping

    def update(self, docs, tokens):
        self.docs += docs
        self.tokens += tokens
        if self.bar is None:
            return
        seconds = max(time.perf_counter() - self.start, 1e-9)
        rates = f"{self.docs / seconds:,.0f} docs/s"
        if self.source:
            self._follow_source()
            rates = f"{self.sizeof(self.tokens / seconds)} tok/s, {rates}"
        else:
            self.bar.update(tokens)
        self.bar.set_postfix_str(rates, refresh=False)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def write_shards(out_dir, train_documents, val_documents, tokenizer="gpt2", source="custom", **kwargs):
    """Shards for a caller that has already split its data, e.g. a text file cut by
    split_by_bytes: write_shards(out, [train_text], [val_text], "my.model", "shakespeare")."""
    return build_shards(out_dir, split_given(train_documents, val_documents), tokenizer, source,
                        split_rule=shard_format.SPLIT_RULE_GIVEN, **kwargs)


def build_from_source(out_dir, source="fineweb-edu", tokenizer="gpt2", text_column="text",
                      val_fraction=DEFAULT_VAL_FRACTION, val_from="hash", **kwargs):
    """The CLI's work: open a --source and shard it, val chosen by hash or as the tail bytes."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val fraction must be between 0 and 1, got {val_fraction}")
    src = open_source(source, text_column)
    if val_from == "tail":
        texts = list(itertools.islice(src.documents(), 2))   # no more: the source may be 10B tokens
        if len(texts) > 1:
            raise ValueError(f"--val-from tail needs a source with exactly one document (one .txt file); "
                             f"{src.name} has more than one document")
        if not texts or not texts[0]:
            raise ValueError(f"source {src.name} is empty: it holds no text")
        train, val = split_by_bytes(texts[0], val_fraction)
        return build_shards(out_dir, split_given([train], [val]), tokenizer, src,
                            split_rule=shard_format.split_rule_by_tail(val_fraction), **kwargs)
    return build_shards(out_dir, split_by_hash(src.documents(), val_fraction), tokenizer, src,
                        split_rule=shard_format.split_rule_by_hash(val_fraction), **kwargs)


# ----------------------------------------------------------------------------------------------
# 6. Command line.

def split_summary(manifest, split):
    """One line on a split of a finished build: "val: 1,024 documents, 2,048,000 tokens in ..."."""
    s = manifest["splits"][split]
    return (f"{split}: {s['documents']:,} documents, {s['tokens']:,} tokens in {len(s['shards'])} shards, "
            f"{s['bytes_per_token']:.3f} bytes/token")


def default_out_dir(source):
    """data/<short source name>: data/fineweb-edu, data/pydocs, data/<file or folder name>."""
    if source.startswith("hf:"):
        name = source[3:].split(":")[0].split("/")[-1]
    elif source in SOURCE_ALIASES or source == PYDOCS:
        name = source
    else:
        name = os.path.splitext(os.path.basename(os.path.normpath(source)))[0]
    return os.path.join(shard_format.DATA_ROOT, re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "corpus")


def main(argv=None):
    p = argparse.ArgumentParser(
        description="Tokenize a corpus into train/val token shards + manifest.json for train_gpt2.py.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--source", default="fineweb-edu",
                   help="fineweb-edu (HuggingFaceFW/fineweb-edu sample-10BT, streamed), pydocs (Python's "
                        "own docs, offline, ~2.5 MB), hf:REPO[:CONFIG] (any Hub dataset), or a local "
                        ".jsonl/.json/.parquet/.txt file, folder or glob (a .txt file is one document)")
    p.add_argument("--text-column", default="text", help="column holding the document text (jsonl/json/parquet/Hub)")
    p.add_argument("--tokenizer", default="gpt2", help="gpt2, or a PATH.model saved by bpe.py")
    p.add_argument("--out", default=None, help="output folder (default: data/<source name>)")
    p.add_argument("--shard-tokens", type=int, default=DEFAULT_SHARD_TOKENS, help="tokens per shard file")
    p.add_argument("--val-fraction", type=float, default=DEFAULT_VAL_FRACTION,
                   help="share of documents (by hash) or of bytes (--val-from tail) held out for val")
    p.add_argument("--val-from", choices=("hash", "tail"), default="hash",
                   help="hash: documents whose text hash is below --val-fraction; tail: the last "
                        "--val-fraction of the bytes of a single-document source (one .txt file)")
    p.add_argument("--workers", type=int, default=None, help="tokenizer processes (default: all CPUs; 0: in-process)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    out = args.out or default_out_dir(args.source)
    try:
        manifest = build_from_source(out, args.source, args.tokenizer, args.text_column, args.val_fraction,
                                     args.val_from, shard_tokens=args.shard_tokens, workers=args.workers,
                                     progress=not args.quiet)
    except ValueError as e:
        raise fail("fineweb.py", e) from None
    except OSError as e:   # ours name their file in the message, the OS's own in e.filename ("[Errno 28]" is noise)
        raise fail("fineweb.py", e.strerror if e.strerror and e.filename is None else e) from None
    except KeyboardInterrupt:
        raise SystemExit("fineweb.py: interrupted; run the same command again to continue") from None
    for split in shard_format.SPLITS:
        print(split_summary(manifest, split))
    print(f"manifest: {os.path.join(out, shard_format.MANIFEST)}")


if __name__ == "__main__":
    main()
