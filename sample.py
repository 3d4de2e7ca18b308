"""Text from a trained model, streamed to the terminal as it is generated.

    python sample.py --checkpoint log --prompt "Hello, I'm a language model," --num_samples 3
    python sample.py --model gpt2 --prompt_file story.txt --max_new_tokens 200 --temperature 0.8
    echo "The list type" | python sample.py --checkpoint runs/first_run/log --stop_at_eot

The model comes from a train_gpt2.py checkpoint (a ckpt_*.pt file, or a log dir's latest) or from
Hugging Face GPT-2 weights (gpt2 ... gpt2-xl, or a save_pretrained directory); its tokenizer from
the checkpoint (or --tokenizer). Generation is train_gpt2.sample_tokens with its KV cache: the
prompt is read once, then each step feeds the model one new token.
"""
import argparse
import codecs
import sys

import torch

import bpe
import train_gpt2 as tg
from errors import UserError, fail


def load_trained(checkpoint=None, model=None, tokenizer=None, device="auto"):
    """(model in eval mode on its device, tokenizer, device) from a checkpoint or HF weights; the
    tokenizer (the checkpoint's, GPT-2's, or the one given) must have the model's vocabulary."""
    device = tg.pick_device(device)
    if checkpoint:
        net, tok = tg.GPT.from_checkpoint(checkpoint, device=device)  # the tokenizer it carries
    else:
        net, tok = tg.GPT.from_pretrained(model).to(device).eval(), None
    if tokenizer or tok is None:
        tok = bpe.load_tokenizer(tokenizer or "gpt2", flag="--tokenizer")
    if tok.vocab_size != net.config.vocab_size:
        raise UserError(f"--tokenizer={tok.spec}: {tok.vocab_size} ids, but the model was trained on"
                        f" {net.config.vocab_size}; pass the tokenizer it was trained with")
    return net, tok, device


def read_prompt(args):
    """--prompt, else --prompt_file ('-': standard input), else piped standard input, else none."""
    stdin = sys.stdin
    if args.prompt is not None:
        return args.prompt
    if args.prompt_file == "-" or (args.prompt_file is None and not stdin.isatty()):
        return stdin.read()
    if args.prompt_file:
        try:
            with open(args.prompt_file, encoding="utf-8") as f:
                return f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"--prompt_file={args.prompt_file}: {e}") from None
    return ""


def stream_sample(model, tok, prompt_ids, args, device, amp_dtype, generator, out):
    """Write the prompt, then each new token's text as soon as it is sampled. A token may end in
    the middle of a UTF-8 character: the incremental decoder holds such bytes until it is whole."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    out.write(tok.decode(prompt_ids[1:] if prompt_ids[0] == tok.eot_id else prompt_ids))
    new = []
    for (token,) in tg.sample_tokens(model, prompt_ids, 1, args.max_new_tokens, top_k=args.top_k,
                                     temperature=args.temperature, device=device,
                                     amp_dtype=amp_dtype, generator=generator):
        if token == tok.eot_id and args.stop_at_eot:
            break
        new.append(token)
        out.write(decoder.decode(tok.encoding.decode_single_token_bytes(token)))
        out.flush()
    out.write(decoder.decode(b"", final=True) + "\n")
    return new


def parse_args(argv):
    p = argparse.ArgumentParser(description="Sample text from a trained GPT-2 model (streamed).")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoint", help="a train_gpt2.py ckpt_*.pt file, or a log dir (its latest)")
    which.add_argument("--model", help="Hugging Face GPT-2 weights: gpt2 ... gpt2-xl (downloaded) or a directory")
    p.add_argument("--prompt", help="text to continue (default: --prompt_file, piped stdin, or nothing)")
    p.add_argument("--prompt_file", help="read the prompt from this file ('-': standard input)")
    p.add_argument("--num_samples", type=int, default=1, help="samples, one after another")
    p.add_argument("--max_new_tokens", type=int, default=200, help="new tokens per sample")
    p.add_argument("--temperature", type=float, default=0.8, help="< 1 sharpens, > 1 flattens; 0: always the likeliest")
    p.add_argument("--top_k", type=int, default=50, help="sample among the k likeliest tokens only")
    p.add_argument("--seed", type=int, default=42, help="seeds the sampling: same seed, same text")
    p.add_argument("--stop_at_eot", action="store_true", help="end a sample at <|endoftext|>")
    p.add_argument("--tokenizer", help="tokenizer spec (default: the checkpoint's; gpt2 for --model)")
    p.add_argument("--device", default="auto", help="auto, cuda, cuda:N, mps or cpu")
    args = p.parse_args(argv)
    for name in ("num_samples", "max_new_tokens", "top_k"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    if not args.temperature >= 0:
        p.error("--temperature must be >= 0")
    if not 0 <= args.seed < 2**63:
        p.error("--seed must lie in [0, 2**63)")
    return args


def main(argv=None, out=sys.stdout):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        model, tok, device = load_trained(args.checkpoint, args.model, args.tokenizer, args.device)
        text = read_prompt(args)
    except (ValueError, OSError) as e:  # OSError: a missing file, no network for the Hub
        raise fail("sample.py", e) from None
    # Nothing to continue: start after <|endoftext|>, as if at the beginning of a document.
    prompt_ids = tok.encode(text, allowed_special={bpe.EOT}) or [tok.eot_id]
    amp_dtype = tg.resolve_dtype("auto", device.split(":")[0])
    generator = torch.Generator(device=device).manual_seed(args.seed)
    samples = []
    for i in range(args.num_samples):
        if args.num_samples > 1:
            out.write(f"--- sample {i + 1} of {args.num_samples}\n")
        samples.append(stream_sample(model, tok, prompt_ids, args, device, amp_dtype, generator, out))
    return samples


if __name__ == "__main__":
    main()
