"""OpenAI's GPT-2 weights in and out, in Hugging Face's format (config.json + model.safetensors).

Our module names follow Hugging Face's GPT2LMHeadModel, so the weights map one to one, except:
OpenAI's TensorFlow code used "Conv1D" layers, linear layers that store their weight as (in, out)
where nn.Linear stores (out, in), so four weights per block are transposed on the way; the
output head is tied to the token embedding and not stored; our embedding's padding rows
(GPTConfig.vocab_multiple) are not in the file.
"""
import json
import os

import torch
from huggingface_hub import snapshot_download
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

import files
from errors import UserError

CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
HUB_NAMES = {"gpt2": "openai-community/gpt2", "gpt2-medium": "openai-community/gpt2-medium",
             "gpt2-large": "openai-community/gpt2-large", "gpt2-xl": "openai-community/gpt2-xl"}
TIED_HEAD = "lm_head.weight"
EMBEDDING = "transformer.wte.weight"


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
    try:
        if os.path.exists(safetensors_path):
            return load_file(safetensors_path)
        if os.path.exists(bin_path):
            return torch.load(bin_path, map_location="cpu", weights_only=True)  # never unpickle code
    except Exception as e:  # a damaged file, or a pickle holding code that weights_only refuses
        raise UserError(f"{directory}: cannot read its weights ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
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
