"""The token-shard format: what fineweb.py writes and train_gpt2.py reads, defined once.

A data folder holds one 1-D .npy array per shard, `{split}_{index:06d}.npy` (uint16 when the
vocabulary fits, else uint32; documents laid end to end, each as <|endoftext|> + its tokens,
possibly spanning two shards) and manifest.json, written last, which lists every shard with its
token count and sha256 (full layout: README.md, "The shard format"). Every check on that folder
lives here, each failing with a one-line UserError that names the file.
"""
import hashlib
import math
import os

import numpy as np

import files
from errors import UserError, one_line

FORMAT, VERSION = "gpt2-token-shards", 1
MANIFEST = "manifest.json"
SPLITS = ("val", "train")
DTYPES = ("uint16", "uint32")
DATA_ROOT = "data"  # fineweb.py writes each source's shards to data/<source name>
DEFAULT_DATA_DIR = os.path.join(DATA_ROOT, "fineweb-edu")  # FineWeb-Edu sample-10BT, the default
SHARD_NAME_PATTERN = r"(train|val)_\d{6}\.npy"


def shard_name(split, index):
    return f"{split}_{index:06d}.npy"


def dtype_for(vocab_size):
    """The narrowest unsigned type that holds every token id: GPT-2's 50,257 ids fit uint16."""
    return np.uint16 if vocab_size <= 2**16 else np.uint32


# How val was chosen, recorded in the manifest so a rerun with another rule is refused.
def split_rule_by_hash(val_fraction):
    return f"blake2b-hash:{val_fraction!r}"


def split_rule_by_tail(val_fraction):
    return f"tail-bytes:{val_fraction!r}"


SPLIT_RULE_GIVEN = "given"  # the caller passed the train and val documents separately


# ----------------------------------------------------------------------------------------------
# Writing

class _HashingFile:
    """Passes writes through to a file while computing their sha256 (no re-read of 200 MB)."""

    def __init__(self, f):
        self.f, self.sha = f, hashlib.sha256()

    def write(self, data):
        self.sha.update(data)
        return self.f.write(data)


def write_shard(path, tokens):
    """np.save `tokens` to `path` atomically; returns the file's sha256."""
    try:
        with files.atomic_write(path, "wb") as f:
            hashing = _HashingFile(f)
            np.save(hashing, tokens, allow_pickle=False)
    except OSError as e:
        reason = e.strerror or (os.strerror(e.errno) if e.errno else one_line(e))
        raise OSError(e.errno or 5, f"cannot write {path}: {reason}") from None
    return hashing.sha.hexdigest()


# ----------------------------------------------------------------------------------------------
# Reading: the manifest checked in full, each shard's header and size, then its content

def require_data_dir(data_dir):
    if not os.path.isdir(data_dir):
        raise UserError(f"data dir {data_dir} does not exist: make token shards with fineweb.py first")


def _is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def read_manifest(data_dir, tokenizer):
    """data_dir/manifest.json, checked against the format and the tokenizer this run uses."""
    require_data_dir(data_dir)
    path = os.path.join(data_dir, MANIFEST)
    if not os.path.exists(path):
        raise UserError(f"no shards in {data_dir}: {path} is missing (fineweb.py writes it last, after every shard)")
    manifest = files.read_json(path)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise UserError(f"{path}: not a version-{VERSION} {FORMAT} manifest")
    theirs = manifest.get("tokenizer") if isinstance(manifest.get("tokenizer"), dict) else {}
    if theirs.get("identity") != tokenizer.identity:
        raise UserError(f"{path}: shards were tokenized with {theirs.get('identity')}, but this run uses"
                        f" {tokenizer.identity} (--tokenizer={tokenizer.spec}); a model must train on its own vocabulary")
    if theirs.get("vocab_size", tokenizer.vocab_size) != tokenizer.vocab_size:
        raise UserError(f"{path}: vocab_size {theirs.get('vocab_size')!r}, but tokenizer {tokenizer.identity}"
                        f" has {tokenizer.vocab_size}")
    if manifest.get("dtype") not in DTYPES:
        raise UserError(f"{path}: dtype {manifest.get('dtype')!r}, expected uint16 or uint32")
    return manifest


def split_shards(data_dir, manifest, split):
    """[(path, tokens, sha256), ...] of one split, and its bytes per token (0.0 if unknown)."""
    where = f"{os.path.join(data_dir, MANIFEST)}"
    splits = manifest.get("splits")
    info = splits.get(split) if isinstance(splits, dict) else None
    shards = info.get("shards") if isinstance(info, dict) else None
    if not shards:
        raise UserError(f"no shards in {data_dir}: {MANIFEST} lists no {split!r} shards")
    listed = []
    for i, s in enumerate(shards if isinstance(shards, list) else [shards]):
        ok = isinstance(s, dict) and isinstance(s.get("file"), str) and _is_count(s.get("tokens")) \
            and isinstance(s.get("sha256"), str) and os.path.basename(s["file"]) == s["file"]
        if not ok:
            raise UserError(f"{where}: malformed {split} shard entry {i}: expected"
                            f" {{\"file\": NAME, \"tokens\": COUNT, \"sha256\": HEX}}, got {one_line(s, 120)}")
        listed.append((os.path.join(data_dir, s["file"]), s["tokens"], s["sha256"]))
    bytes_per_token = info.get("bytes_per_token", 0.0)
    if isinstance(bytes_per_token, bool) or not isinstance(bytes_per_token, (int, float)) \
            or not (math.isfinite(bytes_per_token) and bytes_per_token >= 0):
        raise UserError(f"{where}: {split} bytes_per_token {bytes_per_token!r}, expected a finite number >= 0")
    return listed, float(bytes_per_token)


def split_index(data_dir, split, tokenizer):
    """What a loader needs of one split, after the cheap checks on every shard (manifest, header,
    exact size; the sha256 and token ids are checked by open_shard when a shard is first read, so
    a 10B-token run starts without reading 20 GB): [(path, tokens, sha256, data offset)], the
    dtype, and the split's bytes per token."""
    manifest = read_manifest(data_dir, tokenizer)
    listed, bytes_per_token = split_shards(data_dir, manifest, split)
    dtype = manifest["dtype"]
    shards = [(path, n, sha, shard_data_offset(path, n, dtype)) for path, n, sha in listed]
    return shards, dtype, bytes_per_token


def require_tokens(data_dir, split, tokens, world_size, batch_size, seq_len):
    """A loader needs at least one batch of every rank, plus the last target."""
    if tokens < world_size * batch_size * seq_len + 1:
        raise UserError(f"{data_dir}: the {split} split has {tokens} tokens, fewer than one batch of"
                        f" {world_size} x {batch_size} x {seq_len} + 1")


def shard_data_offset(path, tokens, dtype):
    """Byte offset of the array inside an .npy shard, after checking its header and size."""
    try:
        with open(path, "rb") as f:
            major, _ = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, fortran_order, file_dtype = read_header(f)
            offset = f.tell()
    except FileNotFoundError:
        raise UserError(f"{path}: shard listed in {MANIFEST} is missing") from None
    except (ValueError, OSError) as e:
        raise UserError(f"{path}: not a valid .npy shard ({one_line(e)})") from None
    if shape != (tokens,) or file_dtype != np.dtype(dtype):
        raise UserError(f"{path}: holds {shape} {file_dtype}, manifest says ({tokens},) {dtype}")
    expected, actual = offset + tokens * np.dtype(dtype).itemsize, os.path.getsize(path)
    if actual != expected:
        raise UserError(f"{path}: {actual} bytes, expected {expected} for {tokens} {dtype} tokens (truncated shard?)")
    return offset


def open_shard(path, tokens, sha256, offset, dtype, vocab_size):
    """A read-only memory map of a shard's tokens, once its sha256 and token-id range check out."""
    if files.file_sha256(path) != sha256:
        raise UserError(f"{path}: sha256 does not match {MANIFEST} (corrupt or changed shard); re-run fineweb.py")
    array = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=(tokens,))
    top = int(array.max()) if tokens else 0
    if top >= vocab_size:
        raise UserError(f"{path}: token id {top} >= vocab size {vocab_size} of the tokenizer")
    return array
