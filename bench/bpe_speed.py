"""Benchmark bpe.py: training time beside Hugging Face tokenizers' BpeTrainer, and encode speed.

    python -m bench.bpe_speed            # everything (about a minute on 2 cores)
    python -m bench.bpe_speed --quick    # tinyshakespeare, vocab 4096 only, plus encode speed

Corpora: ../shared/data/tinyshakespeare.txt (skipped if absent) and ~10 MB of the Python
standard library's own .py sources (always available, so anyone can reproduce the figures).
Both trainers get the same documents and the same total vocabulary size, <|endoftext|>
included, and split text with GPT-2's pattern (HF: the ByteLevel pre-tokenizer). HF uses all
cores (Rust threads); ours is timed in one process and with --workers processes for counting.
Timings are wall-clock seconds, best of --repeat runs. Other work on the machine slows both
sides, so the load average is printed with every table.
"""
import argparse
import os
import sysconfig
import time

import bpe
from bench import TINYSHAKESPEARE as SHAKESPEARE

STDLIB_BYTES = 10 * 2**20  # "~10 MB corpus" from the issue


def stdlib_corpus(limit_bytes=STDLIB_BYTES):
    """The standard library's .py files (sorted walk, site-packages excluded) up to limit_bytes,
    one document per file; files that are not UTF-8 (a few test fixtures) are skipped."""
    documents, total = [], 0
    for directory, subdirs, files in os.walk(sysconfig.get_paths()["stdlib"]):
        subdirs[:] = sorted(d for d in subdirs if d not in ("site-packages", "dist-packages", "__pycache__"))
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            try:
                with open(os.path.join(directory, name), encoding="utf-8") as f:
                    text = f.read()
            except (UnicodeDecodeError, OSError):
                continue
            documents.append(text)
            total += len(text.encode("utf-8"))
            if total >= limit_bytes:
                return documents
    return documents


def load_line():
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min) {five:.2f} (5 min) on {os.cpu_count()} cores"


def best_time(fn, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def train_ours(documents, vocab_size, workers):
    return bpe.Tokenizer("gpt2").train(documents, vocab_size, special_tokens=[bpe.EOT], workers=workers)


def train_hf(documents, vocab_size):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[bpe.EOT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(documents, trainer)
    return tok


def bench_training(name, documents, vocab_sizes, workers, repeat, with_hf):
    size = sum(len(d.encode("utf-8")) for d in documents) / 1e6
    print(f"\n## training on {name}: {size:.1f} MB, {len(documents)} documents ({load_line()})")
    print(f"{'vocab':>6} {'ours 1 proc':>12} {f'ours {workers} procs':>13} {'HF BpeTrainer':>14} {'ours/HF':>8}  merges")
    for vocab_size in vocab_sizes:
        serial, tok = best_time(lambda: train_ours(documents, vocab_size, 1), repeat)
        parallel, _ = best_time(lambda: train_ours(documents, vocab_size, workers), repeat) if workers > 1 else (serial, None)
        hf = best_time(lambda: train_hf(documents, vocab_size), repeat)[0] if with_hf else float("nan")
        print(f"{vocab_size:>6} {serial:>11.2f}s {parallel:>12.2f}s {hf:>13.2f}s {min(serial, parallel) / hf:>8.2f}  {len(tok.merges)}")


def bench_encoding(name, text, repeat, trained=None):
    import tiktoken
    size = len(text.encode("utf-8")) / 1e6
    print(f"\n## encoding {name}: {size:.1f} MB ({load_line()})")
    candidates = [("gpt2", bpe.Tokenizer.from_gpt2, lambda: tiktoken.get_encoding("gpt2"))]
    if trained is not None:
        candidates.append(("trained 32768", lambda: trained, trained.to_tiktoken))
    for label, make_ours, make_tiktoken in candidates:
        tok, enc = make_ours(), make_tiktoken()

        def ours():
            tok._cache.clear()  # cold chunk cache: every run starts from nothing
            return tok.encode_ordinary(text)

        t_ours, ids = best_time(ours, repeat)
        t_tik, ids_tik = best_time(lambda: enc.encode_ordinary(text), repeat)
        same = "identical ids" if ids == ids_tik else "IDS DIFFER"
        print(f"{label:>14}: bpe.py pure Python {size / t_ours:6.2f} MB/s   tiktoken {size / t_tik:6.2f} MB/s   ({same})")


def main():
    parser = argparse.ArgumentParser(prog="python -m bench.bpe_speed", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tinyshakespeare (or stdlib 1 MB), vocab 4096, encode")
    parser.add_argument("--corpus", choices=["all", "shakespeare", "stdlib"], default="all")
    parser.add_argument("--vocab-sizes", type=int, nargs="+", default=[4096, 32768])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes for counting chunks")
    parser.add_argument("--repeat", type=int, default=2, help="runs per figure; the best is printed")
    parser.add_argument("--shakespeare", default=SHAKESPEARE, help="path of tinyshakespeare.txt")
    parser.add_argument("--no-hf", action="store_true", help="skip Hugging Face tokenizers")
    parser.add_argument("--no-encode", action="store_true", help="skip the encode benchmark")
    args = parser.parse_args()
    bpe.offline_tiktoken_cache()  # GPT-2's vocabulary without a network
    print(f"bench.bpe_speed ({load_line()})")

    corpora = []
    if args.corpus in ("all", "shakespeare"):
        if os.path.exists(args.shakespeare):
            with open(args.shakespeare, encoding="utf-8") as f:
                corpora.append(("tinyshakespeare.txt", [f.read()]))
        else:
            print(f"(skipping tinyshakespeare: {os.path.normpath(args.shakespeare)} not found)")
    if args.corpus in ("all", "stdlib") and not (args.quick and corpora):
        corpora.append((f"Python {sysconfig.get_python_version()} stdlib sources",
                        stdlib_corpus(2**20 if args.quick else STDLIB_BYTES)))
    vocab_sizes = [4096] if args.quick else args.vocab_sizes
    trained = None
    for name, documents in corpora:
        bench_training(name, documents, vocab_sizes, args.workers, 1 if args.quick else args.repeat, not args.no_hf)
    if not args.no_encode:
        for name, documents in corpora:
            if trained is None and not args.quick:
                trained = train_ours(documents, 32768, args.workers)
            text = "".join(documents)
            bench_encoding(name, text, 1 if args.quick else args.repeat, trained)
    print(f"\ndone ({load_line()})")


if __name__ == "__main__":
    main()
