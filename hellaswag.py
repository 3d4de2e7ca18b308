"""Evaluate a trained model on HellaSwag from the command line (the scoring: hellaswag_scoring.py).

  python hellaswag.py --download-only                # fetch the val split into the cache
  python hellaswag.py --model gpt2                   # OpenAI's weights, val split (downloaded)
  python hellaswag.py --checkpoint log/ckpt_005000.pt --data hellaswag_val.jsonl

It prints acc and acc_norm (defined in hellaswag_scoring.py), the number of examples and the speed.
"""
import argparse
import os
import time

import torch

import hellaswag_scoring as hs
import sample
import train_gpt2
from errors import fail


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Evaluate a GPT-2-style model on HellaSwag (acc and acc_norm).")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--download-only", action="store_true",
                       help="only download --split into the cache (where the trainer looks) and print its path")
    which.add_argument("--model", help="Hugging Face GPT-2 weights: a name (gpt2, gpt2-medium, ...) or a directory")
    which.add_argument("--checkpoint", help="a train_gpt2.py checkpoint: a ckpt_*.pt file, or a log directory (its latest)")
    p.add_argument("--data", help="a local HellaSwag jsonl file (default: download --split into the cache)")
    p.add_argument("--split", default="val", choices=[s for s in hs.SPLITS if s != "test"],
                   help="which split to download when --data is not given (default: val)")
    p.add_argument("--cache-dir", default=None, help=f"download folder (default: {hs.default_cache_dir()})")
    p.add_argument("--tokenizer", default=None,
                   help="tokenizer spec for bpe.load_tokenizer (default: the checkpoint's, else gpt2)")
    p.add_argument("--batch-size", type=int, default=None,
                   help=f"examples per forward pass, 4 rows each (default: {hs.CPU_BATCH_SIZE} on a CPU, where "
                        f"batching is no faster and costs memory; {hs.GPU_BATCH_SIZE} on a GPU)")
    p.add_argument("--device", default=None, help="cuda, mps or cpu (default: autodetect)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N examples")
    args = p.parse_args(argv)
    for flag in ("batch_size", "threads", "limit"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be at least 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:  # data first: a bad file or no network should fail before a big model is loaded
        path = args.data or hs.download(args.split, args.cache_dir)
        examples = hs.load_examples(path)[:args.limit]
        if args.download_only:
            print(f"{path}: {len(examples)} examples")
            return None
        # the model, its tokenizer (checked to fit it) and an existing device, or a one-line error
        model, tokenizer, device = sample.load_trained(args.checkpoint, args.model, args.tokenizer,
                                                       args.device or "auto")
        hs.check_endings_fit(examples, tokenizer, hs.model_block_size(model))
    except (ValueError, OSError) as e:  # OSError: missing files, no network (Hugging Face Hub, tiktoken)
        raise fail("hellaswag.py", e) from None
    amp_dtype = train_gpt2.resolve_dtype("auto", device.split(":")[0])  # as the trainer would
    batch_size = args.batch_size or hs.default_batch_size(device)
    start = time.time()
    counts = hs.evaluate(model, examples, tokenizer, device, batch_size=batch_size, progress=True,
                         amp_dtype=amp_dtype)
    seconds = time.time() - start
    n = counts["total"]
    print(f"hellaswag {os.path.basename(path)}: acc {counts['correct'] / n:.4f} ({counts['correct']}/{n}) "
          f"acc_norm {counts['correct_norm'] / n:.4f} ({counts['correct_norm']}/{n}) | "
          f"{n} examples in {seconds:.1f} s ({n / seconds:.1f} examples/s on {device}, {batch_size} per forward pass)")
    return counts


if __name__ == "__main__":
    main()
