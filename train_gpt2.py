"""Train GPT-2 from scratch, in one file you can read top to bottom.

    python train_gpt2.py --model=tiny --data_dir=...          # one process (CPU, MPS or one GPU)
    torchrun --standalone --nproc_per_node=8 train_gpt2.py     # GPT-2 124M on 8 GPUs, 10B tokens
    python train_gpt2.py --help                                # every setting, its default and origin

Reading order: 1. configuration, 2. the model, 3. OpenAI's weights in and out, 4. optimizer and
learning-rate schedule, 5. the token-shard data loader, 6. devices and precision, 7. the training
step and loop with evaluation and logging, 8. checkpoints and exact resume, then main().
The recipe is GPT-2's architecture (Radford et al. 2019) trained with GPT-3's hyperparameters
(Brown et al. 2020, Table 2.1 and Appendix B), as in Karpathy's build-nanogpt.
"""
import bisect
import contextlib
import dataclasses
import glob
import hashlib
import inspect
import json
import math
import os
import pickle
import random
import re
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

import bpe


class UserError(ValueError):
    """Bad input from the user (a flag, a data file, a checkpoint): main() prints it as one line."""


# ------------------------------------------------------------------------------------------------
# 1. Configuration
# ------------------------------------------------------------------------------------------------

@dataclass
class GPTConfig:
    block_size: int = 1024   # longest context the model can see (GPT-2: 1024 positions)
    vocab_size: int = 50257  # token ids the tokenizer emits: GPT-2's 50,000 merges + 256 bytes + <|endoftext|>
    n_layer: int = 12        # transformer blocks
    n_head: int = 12         # attention heads per block (n_embd must divide by it)
    n_embd: int = 768        # width of the residual stream
    # The embedding table gets rows up to a multiple of this: 50257 -> 50304 = 393 * 128. GPU matmul
    # kernels tile in powers of two, so the odd 50257 runs on slow edge-case code; the ~4% speedup
    # build-nanogpt measured costs 36,096 extra parameters. The extra rows are never used (not as
    # inputs, and the logits are cut back to vocab_size), so they start at zero and stay there.
    vocab_multiple: int = 128
    # Dropout on embeddings, attention weights and residual branches. OpenAI trained GPT-2 with
    # 0.1; a single pass over 10B tokens never sees a token twice, so like build-nanogpt we use 0.
    # Small data seen many times (the CPU speedrun repeats Shakespeare ~20x) overfits without it.
    dropout: float = 0.0

    @property
    def padded_vocab_size(self):
        return math.ceil(self.vocab_size / self.vocab_multiple) * self.vocab_multiple


# Model shapes. The four GPT-2 sizes are OpenAI's (layers and widths in the GPT-2 paper's Table 2,
# heads in their released hparams.json; counts with the tied head and vocab 50257). The small ones
# are ours, for CPUs: "tiny" keeps the tests fast, "laptop" trains something that talks in minutes.
MODEL_PRESETS = {
    "gpt2":        dict(n_layer=12, n_head=12, n_embd=768),    # 124M
    "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024),   # 355M
    "gpt2-large":  dict(n_layer=36, n_head=20, n_embd=1280),   # 774M
    "gpt2-xl":     dict(n_layer=48, n_head=25, n_embd=1600),   # 1558M
    "laptop":      dict(n_layer=4, n_head=4, n_embd=128, block_size=128),  # ~1M: first_run.py's <= 5 min on 2 cores
    "tiny":        dict(n_layer=2, n_head=2, n_embd=32, block_size=64),
}


@dataclass
class TrainConfig:
    # What to train, on what.
    model: str = "gpt2"                    # model shape, a key of MODEL_PRESETS (gpt2 = 124M)
    tokenizer: str = "gpt2"                # "gpt2" (tiktoken) or a bpe.py .model file; must match the shards' manifest
    data_dir: str = "data/fineweb-edu"     # token shards + manifest.json, where `python fineweb.py` writes FineWeb-Edu's 10B sample
    log_dir: str = "log"                   # log.txt, metrics.jsonl and ckpt_*.pt are written here
    # Batch. The GPT-3 paper trains its 125M model with 0.5M-token batches (Table 2.1).
    total_batch_size: int = 524288         # tokens per optimizer step: 2**19 = 524,288 ~ 0.5M, summed over GPUs and micro steps
    micro_batch_size: int = 64             # sequences per GPU per forward/backward; 64 x 1024 fits 124M on an 80 GB GPU, halve it if memory runs out
    seq_len: int = 1024                    # tokens per training sequence: GPT-2's full context
    # AdamW and the learning-rate schedule: GPT-3 paper, Table 2.1 (125M row) and Appendix B.
    max_lr: float = 6e-4                   # peak learning rate of GPT-3 Small
    min_lr_ratio: float = 0.1              # cosine decay ends at 10% of max_lr (Appendix B)
    warmup_steps: int = 715                # linear warmup over 375M tokens (Appendix B): 375e6 / 2**19 = 715 steps
    max_steps: int = 19073                 # one pass over FineWeb-Edu's 10B-token sample: 10e9 / 2**19 = 19,073 steps
    weight_decay: float = 0.1              # decoupled weight decay on matrices only (Appendix B)
    beta1: float = 0.9                     # Adam momentum (Appendix B)
    beta2: float = 0.95                    # Adam second moment; 0.95, not the usual 0.999, forgets stale gradient scales sooner (Appendix B)
    eps: float = 1e-8                      # Adam epsilon (Appendix B)
    grad_clip: float = 1.0                 # clip the global gradient norm at 1.0 (Appendix B); 0 disables
    # Evaluation, samples, checkpoints (intervals as in build-nanogpt).
    eval_interval: int = 250               # steps between val-loss (and HellaSwag) evaluations
    val_tokens: int = 10485760             # tokens per val-loss estimate: build-nanogpt's 20 batches of 64 x 1024 on 8 GPUs
    hellaswag: bool = True                 # evaluate HellaSwag at each eval when its data file exists
    hellaswag_path: str = ""               # HellaSwag val jsonl; empty = hellaswag.default_data_path("val")
    sample_interval: int = 250             # steps between text samples
    num_samples: int = 4                   # samples each time, from the prompt "Hello, I'm a language model,"
    sample_tokens: int = 32                # new tokens per sample (top-k 50 sampling)
    checkpoint_interval: int = 5000        # steps between checkpoints (one is also written when a run ends)
    # Run control.
    seed: int = 1337                       # seeds model init, data order and sampling
    device: str = "auto"                   # auto (cuda > mps > cpu), cuda, mps or cpu
    dtype: str = "auto"                    # autocast dtype: auto (bfloat16 on GPUs that have it, else float16 on cuda, float32 elsewhere), bfloat16, float16 or float32
    compile: str = "auto"                  # torch.compile the model: auto (on for cuda, where it pays off), true or false
    resume: bool = False                   # continue from the latest ckpt_*.pt in log_dir, with its settings (flags given now override them; device, log_dir, stop_step are never inherited)
    stop_step: int = -1                    # stop (with a checkpoint) at this step without changing the LR schedule; -1 = run to max_steps


CHOICES = {"device": ("auto", "cuda", "mps", "cpu"),
           "dtype": ("auto", "bfloat16", "float16", "float32"),
           "compile": ("auto", "true", "false")}
# Settings of one invocation rather than of the run (where it runs, where its files are, when it
# stops): a resumed run takes them from the command line, never from its checkpoint.
RUN_CONTROL = ("resume", "stop_step", "device", "log_dir")


def field_comments(cls):
    """The comment beside each field of dataclass `cls`, so --help and the source never disagree."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    return {m.group(1): m.group(2) for m in re.finditer(r"^\s+(\w+): \w+ = .*?#\s*(.*)$", source, re.M)}


def format_help():
    comments = field_comments(TrainConfig)
    lines = ["usage: [torchrun ...] train_gpt2.py [--name=value ...]", "",
             "Every TrainConfig field can be set as --name=value (bools: true/false/1/0):", ""]
    for f in dataclasses.fields(TrainConfig):
        lines.append(f"  --{f.name}={f.default}  ({f.type.__name__})")
        lines.append(f"        {comments.get(f.name, '')}")
    lines += ["", "model presets: " + ", ".join(MODEL_PRESETS)]
    return "\n".join(lines)


def _convert(name, text, typ):
    """'--name=text' -> a value of the field's type, or a one-line UserError naming the flag."""
    if typ is bool:
        table = {"true": True, "1": True, "false": False, "0": False}
        if text.lower() not in table:
            raise UserError(f"--{name}={text}: expected true/false/1/0")
        return table[text.lower()]
    if name in CHOICES:
        text = text.lower()
    try:
        value = typ(text)
    except ValueError:
        raise UserError(f"--{name}={text}: expected {typ.__name__}") from None
    if name in CHOICES and value not in CHOICES[name]:
        raise UserError(f"--{name}={text}: expected one of {', '.join(CHOICES[name])}")
    return value


def parse_overrides(argv):
    """['--max_lr=1e-3', '--resume'] -> {'max_lr': 0.001, 'resume': True}, typed from TrainConfig."""
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    overrides = {}
    for arg in argv:
        name, has_value, text = arg.removeprefix("--").partition("=")
        if not arg.startswith("--") or name not in fields:
            raise UserError(f"unknown flag {arg.split('=')[0]!r}; valid flags: "
                            + " ".join(f"--{n}" for n in fields) + " (--help explains them)")
        if not has_value:
            if fields[name].type is not bool:
                raise UserError(f"--{name} needs a value: --{name}=VALUE")
            text = "true"  # a bare --resume means --resume=true
        overrides[name] = _convert(name, text, fields[name].type)
    return overrides


def validate_config(tc, world_size):
    """Checks that need the whole config (and the number of GPUs), each a one-line error."""
    if tc.model not in MODEL_PRESETS:
        raise UserError(f"--model={tc.model}: expected one of {', '.join(MODEL_PRESETS)}")
    block_size = MODEL_PRESETS[tc.model].get("block_size", GPTConfig.block_size)
    if tc.seq_len > block_size:
        raise UserError(f"--seq_len={tc.seq_len} exceeds model {tc.model}'s block_size {block_size}")
    for name in ("micro_batch_size", "seq_len", "max_steps", "eval_interval", "val_tokens",
                 "sample_interval", "checkpoint_interval", "total_batch_size"):
        if getattr(tc, name) <= 0:
            raise UserError(f"--{name}={getattr(tc, name)}: must be positive")
    tokens_per_micro_step = tc.micro_batch_size * tc.seq_len * world_size
    if tc.total_batch_size % tokens_per_micro_step:
        raise UserError(f"--total_batch_size={tc.total_batch_size} is not divisible by micro_batch_size"
                        f" x seq_len x world_size = {tc.micro_batch_size} x {tc.seq_len} x {world_size}"
                        f" = {tokens_per_micro_step}")
    if not (math.isfinite(tc.max_lr) and tc.max_lr > 0):
        raise UserError(f"--max_lr={tc.max_lr}: must be a positive number")
    if not 0.0 <= tc.min_lr_ratio <= 1.0:
        raise UserError(f"--min_lr_ratio={tc.min_lr_ratio}: must lie in [0, 1]")
    for name in ("beta1", "beta2"):
        if not 0.0 <= getattr(tc, name) < 1.0:
            raise UserError(f"--{name}={getattr(tc, name)}: must lie in [0, 1)")
    if not (math.isfinite(tc.eps) and tc.eps > 0):
        raise UserError(f"--eps={tc.eps}: must be a positive number")
    for name in ("weight_decay", "grad_clip"):
        if not (math.isfinite(getattr(tc, name)) and getattr(tc, name) >= 0):
            raise UserError(f"--{name}={getattr(tc, name)}: must be a number >= 0")
    for name in ("warmup_steps", "num_samples", "sample_tokens"):
        if getattr(tc, name) < 0:
            raise UserError(f"--{name}={getattr(tc, name)}: must be >= 0")
    if not 0 <= tc.seed < 2**32:  # numpy's limit
        raise UserError(f"--seed={tc.seed}: must lie in [0, 2**32)")
    if tc.stop_step == 0 or tc.stop_step < -1:
        raise UserError(f"--stop_step={tc.stop_step}: must be a step >= 1, or -1 to run to max_steps")


# ------------------------------------------------------------------------------------------------
# 2. The model: GPT-2 (a decoder-only transformer with pre-LayerNorm blocks)
# ------------------------------------------------------------------------------------------------

class CausalSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        assert config.n_embd % config.n_head == 0, "n_embd must divide by n_head"
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # queries, keys, values in one matmul
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.c_proj.is_residual_projection = True  # see GPT._init_weights
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        # (B, T, C) -> (B, n_head, T, head_size): each head attends independently.
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        # softmax(q k^T / sqrt(head_size)) v with a causal mask; PyTorch picks a fused kernel
        # (FlashAttention on recent GPUs) that never materialises the T x T attention matrix.
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side again
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)  # 4x wider, as in the original transformer
        self.gelu = nn.GELU(approximate="tanh")  # GPT-2 was trained with the tanh approximation of GELU
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.c_proj.is_residual_projection = True
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """GPT-2 moved LayerNorm to the input of each sub-layer (pre-LN, GPT-2 paper 2.3): the residual
    stream stays a plain sum of the sub-layers' outputs, so gradients flow straight down it and
    deep stacks train more stably than with the original transformer's post-LN."""

    def __init__(self, config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))  # tokens exchange information
        x = x + self.mlp(self.ln_2(x))   # each token thinks on its own
        return x


class GPT(nn.Module):
    # Module names follow Hugging Face's GPT-2 so OpenAI's weights map one to one.
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.padded_vocab_size, config.n_embd),  # token embeddings
            wpe=nn.Embedding(config.block_size, config.n_embd),         # learned position embeddings
            h=nn.ModuleList(Block(config) for _ in range(config.n_layer)),
            ln_f=nn.LayerNorm(config.n_embd),  # pre-LN leaves the last block's output unnormalised
        ))
        self.embd_dropout = nn.Dropout(config.dropout)
        self.lm_head = nn.Linear(config.n_embd, config.padded_vocab_size, bias=False)
        # Weight tying (Press & Wolf 2017), as GPT-2 does: the output layer reuses the token
        # embedding matrix, saving 38.6M parameters at 124M and tying "read" to "write".
        self.lm_head.weight = self.transformer.wte.weight
        self.apply(self._init_weights)
        with torch.no_grad():
            self.transformer.wte.weight[config.vocab_size:].zero_()  # padding rows: never used, see GPTConfig

    def _init_weights(self, module):
        """GPT-2 init: N(0, 0.02) weights, zero biases. Each block adds its two projections into
        the residual stream, so its variance grows with 2 * n_layer additions; scaling those
        projections by 1/sqrt(2 * n_layer) keeps the stream's scale independent of depth (GPT-2 paper, 2.3)."""
        if module is self.lm_head:
            return  # tied to wte, which is initialised as an embedding
        if isinstance(module, nn.Linear):
            std = 0.02
            if getattr(module, "is_residual_projection", False):
                std /= math.sqrt(2 * self.config.n_layer)
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx, targets=None):
        """idx: (B, T) token ids -> logits (B, T, vocab_size) and, given targets, the mean cross-entropy."""
        B, T = idx.shape
        if T > self.config.block_size:
            raise ValueError(f"sequence of {T} tokens is longer than block_size {self.config.block_size}")
        pos = torch.arange(T, device=idx.device)
        x = self.embd_dropout(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        # Cut the padding columns off (a view, no copy): the softmax then runs over exactly the
        # tokenizer's vocabulary, so losses and probabilities are those of a 50257-way model.
        logits = self.lm_head(x)[..., :self.config.vocab_size]
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return logits, loss

    # --------------------------------------------------------------------------------------------
    # 3. OpenAI's weights in and out (Hugging Face's GPT-2 format)
    # --------------------------------------------------------------------------------------------
    # OpenAI's TensorFlow code used "Conv1D" layers, which are linear layers storing their weight
    # as (in, out); nn.Linear stores (out, in). These four weights are transposed on the way.
    CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
    HF_NAMES = {"gpt2": "openai-community/gpt2", "gpt2-medium": "openai-community/gpt2-medium",
                "gpt2-large": "openai-community/gpt2-large", "gpt2-xl": "openai-community/gpt2-xl"}

    @classmethod
    def from_pretrained(cls, name_or_dir):
        """GPT-2 weights in Hugging Face format: a local directory (config.json + model.safetensors
        or pytorch_model.bin), or one of gpt2, gpt2-medium, gpt2-large, gpt2-xl downloaded from the Hub."""
        if os.path.isdir(name_or_dir):
            directory = name_or_dir
        elif name_or_dir in cls.HF_NAMES:
            from huggingface_hub import snapshot_download  # only needed online
            directory = snapshot_download(cls.HF_NAMES[name_or_dir], allow_patterns=["config.json", "model.safetensors"])
        else:
            raise UserError(f"{name_or_dir}: neither a directory nor one of {', '.join(cls.HF_NAMES)}")
        hf = _read_json(os.path.join(directory, "config.json"))
        if hf.get("activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh") \
                or hf.get("n_inner") not in (None, 4 * hf["n_embd"]) \
                or hf.get("scale_attn_by_inverse_layer_idx") or not hf.get("tie_word_embeddings", True):
            raise UserError(f"{directory}/config.json: not a plain GPT-2 (activation, n_inner, attention scaling or untied head)")
        config = GPTConfig(block_size=hf["n_positions"], vocab_size=hf["vocab_size"],
                           n_layer=hf["n_layer"], n_head=hf["n_head"], n_embd=hf["n_embd"])
        theirs = _read_hf_weights(directory)
        theirs = {k.removeprefix("transformer."): v for k, v in theirs.items()
                  if not k.endswith((".attn.bias", ".attn.masked_bias"))}  # old causal-mask buffers
        theirs.pop("lm_head.weight", None)  # tied to wte
        model = cls(config)
        ours = {k.removeprefix("transformer."): v for k, v in model.state_dict().items() if k != "lm_head.weight"}
        if ours.keys() != theirs.keys():
            raise UserError(f"{directory}: weights do not match GPT-2's: missing {sorted(ours.keys() - theirs.keys())[:3]},"
                            f" unexpected {sorted(theirs.keys() - ours.keys())[:3]}")
        with torch.no_grad():
            for name, dst in ours.items():
                src = theirs[name].t() if name.endswith(cls.CONV1D_WEIGHTS) else theirs[name]
                if name == "wte.weight":
                    dst = dst[:config.vocab_size]  # padding rows stay zero
                if src.shape != dst.shape:
                    raise UserError(f"{directory}: {name} has shape {tuple(src.shape)}, expected {tuple(dst.shape)}")
                dst.copy_(src)
        return model

    def save_pretrained(self, directory, eot_id=None):
        """Write config.json + model.safetensors that transformers' GPT2LMHeadModel loads."""
        c = self.config
        eot_id = c.vocab_size - 1 if eot_id is None else eot_id  # GPT-2's <|endoftext|> is its last id
        os.makedirs(directory, exist_ok=True)
        tensors = {}
        for name, t in self.state_dict().items():
            # safetensors refuses two names for one storage, and transformers re-ties lm_head to
            # wte itself (tie_word_embeddings), so the head is simply not written.
            if name == "lm_head.weight":
                continue
            t = t.detach()
            if name == "transformer.wte.weight":
                t = t[:c.vocab_size]  # drop the padding rows: the file holds a plain 50257-token GPT-2
            if name.endswith(self.CONV1D_WEIGHTS):
                t = t.t()
            tensors[name] = t.to("cpu", copy=True).contiguous()
        hf = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
              "vocab_size": c.vocab_size, "n_positions": c.block_size, "n_ctx": c.block_size,
              "n_embd": c.n_embd, "n_layer": c.n_layer, "n_head": c.n_head, "n_inner": None,
              "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5, "initializer_range": 0.02,
              "resid_pdrop": c.dropout, "embd_pdrop": c.dropout, "attn_pdrop": c.dropout,
              "bos_token_id": eot_id, "eos_token_id": eot_id, "tie_word_embeddings": True}
        from safetensors.torch import save
        with bpe.atomic_write(os.path.join(directory, "model.safetensors")) as f:
            f.write(save(tensors, metadata={"format": "pt"}))
        with bpe.atomic_write(os.path.join(directory, "config.json"), "w") as f:
            json.dump(hf, f, indent=2)

    # --------------------------------------------------------------------------------------------
    # 4. Optimizer
    # --------------------------------------------------------------------------------------------
    def configure_optimizers(self, weight_decay, learning_rate, betas, eps, device_type):
        """AdamW with weight decay on matrices (matmul weights, embeddings) only: decaying biases
        and LayerNorm gains towards zero only hurts, and they hold few parameters."""
        params = [p for p in self.parameters() if p.requires_grad]  # parameters() lists tied wte once
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        # fused=True runs the whole update in one CUDA kernel instead of several per parameter.
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, eps=eps, fused=device_type == "cuda")


# The file readers of section 3 (from_pretrained), also used for the shard manifest.

def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise UserError(f"{path}: not found") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: invalid JSON ({e})") from None


def _read_hf_weights(directory):
    safetensors_path = os.path.join(directory, "model.safetensors")
    if os.path.exists(safetensors_path):
        from safetensors.torch import load_file
        return load_file(safetensors_path)
    bin_path = os.path.join(directory, "pytorch_model.bin")
    if os.path.exists(bin_path):
        return torch.load(bin_path, map_location="cpu", weights_only=True)  # never unpickle code
    raise UserError(f"{directory}: neither model.safetensors nor pytorch_model.bin found")


# ------------------------------------------------------------------------------------------------
# 4. (continued) The learning-rate schedule
# ------------------------------------------------------------------------------------------------

def get_lr(step, max_lr, min_lr, warmup_steps, max_steps):
    """Linear warmup to max_lr over warmup_steps, then cosine decay to min_lr at max_steps."""
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps  # step 0 already moves: no wasted step at lr 0
    if step >= max_steps:
        return min_lr
    progress = (step - warmup_steps) / (max_steps - warmup_steps)  # 0 -> 1
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)


# ------------------------------------------------------------------------------------------------
# 5. Data: token shards + manifest (written by fineweb.py; format in README.md, "The shard format")
# ------------------------------------------------------------------------------------------------

def require_data_dir(data_dir):
    if not os.path.isdir(data_dir):
        raise UserError(f"data dir {data_dir} does not exist: make token shards with fineweb.py first")


def read_manifest(data_dir, tokenizer):
    """Load and check data_dir/manifest.json against the tokenizer this run uses."""
    require_data_dir(data_dir)
    path = os.path.join(data_dir, "manifest.json")
    if not os.path.exists(path):
        raise UserError(f"no shards in {data_dir}: {path} is missing (fineweb.py writes it last, after every shard)")
    manifest = _read_json(path)
    if manifest.get("format") != "gpt2-token-shards" or manifest.get("version") != 1:
        raise UserError(f"{path}: not a version-1 gpt2-token-shards manifest")
    theirs = manifest.get("tokenizer", {})
    if theirs.get("identity") != tokenizer.identity:
        raise UserError(f"{path}: shards were tokenized with {theirs.get('identity')}, but this run uses"
                        f" {tokenizer.identity} (--tokenizer={tokenizer.spec}); a model must train on its own vocabulary")
    if manifest.get("dtype") not in ("uint16", "uint32"):
        raise UserError(f"{path}: dtype {manifest.get('dtype')!r}, expected uint16 or uint32")
    return manifest


def _shard_data_offset(path, tokens, dtype):
    """Byte offset of the array inside an .npy file, after checking header and size."""
    try:
        with open(path, "rb") as f:
            major, _ = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, fortran_order, file_dtype = read_header(f)
            offset = f.tell()
    except FileNotFoundError:
        raise UserError(f"{path}: shard listed in manifest.json is missing") from None
    except ValueError as e:
        raise UserError(f"{path}: not a valid .npy shard ({e})") from None
    if shape != (tokens,) or file_dtype != np.dtype(dtype):
        raise UserError(f"{path}: holds {shape} {file_dtype}, manifest says ({tokens},) {dtype}")
    expected, actual = offset + tokens * np.dtype(dtype).itemsize, os.path.getsize(path)
    if actual != expected:
        raise UserError(f"{path}: {actual} bytes, expected {expected} for {tokens} {dtype} tokens (truncated shard?)")
    return offset


class TokenShardLoader:
    """Serves (x, y) batches of B x T tokens, y being x shifted by one, from one split's shards.

    The split is read as one endless stream: each epoch is every shard once, in an order shuffled
    from (seed, epoch), laid end to end, and epochs follow each other. A batch may straddle two
    shards or two epochs, so no token is ever skipped or repeated. At each micro step the ranks
    read consecutive, disjoint B*T-token windows of the stream (plus one token for the last
    target), and all advance by world_size * B * T. The whole state is that one stream position,
    which even survives a change in the number of GPUs."""

    def __init__(self, data_dir, split, batch_size, seq_len, tokenizer, *, rank=0, world_size=1,
                 seed=0, shuffle=True):
        self.manifest = read_manifest(data_dir, tokenizer)
        self.B, self.T, self.rank, self.world_size = batch_size, seq_len, rank, world_size
        self.seed, self.shuffle, self.vocab_size = seed, shuffle, tokenizer.vocab_size
        self.tokenizer_identity = tokenizer.identity
        info = self.manifest.get("splits", {}).get(split) or {}
        shards = info.get("shards") or []
        if not shards:
            raise UserError(f"no shards in {data_dir}: manifest.json lists no {split!r} shards")
        self.dtype = self.manifest["dtype"]
        try:
            self.files = [os.path.join(data_dir, s["file"]) for s in shards]
            self.sizes = [int(s["tokens"]) for s in shards]
            self.sha256 = [str(s["sha256"]) for s in shards]
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"{data_dir}/manifest.json: malformed {split} shard entry ({type(e).__name__}: {e})") from None
        # Cheap checks on every shard now (header, exact size); the sha256 and the token-id range
        # are checked when a shard is first opened, so a 10B-token run starts without reading 20 GB.
        self.offsets = [_shard_data_offset(f, n, self.dtype) for f, n in zip(self.files, self.sizes)]
        self.tokens_per_epoch = sum(self.sizes)
        self.bytes_per_token = float(info.get("bytes_per_token") or 0.0)
        if self.tokens_per_epoch < world_size * batch_size * seq_len + 1:
            raise UserError(f"{data_dir}: the {split} split has {self.tokens_per_epoch} tokens, fewer than one"
                            f" batch of {world_size} x {batch_size} x {seq_len} + 1")
        self.position = 0
        self._open = {}      # shard index -> verified memory map
        self._layouts = {}   # epoch -> (shard order, start offset of each in the epoch)

    def _shard(self, i):
        if i not in self._open:
            path = self.files[i]
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 24), b""):
                    digest.update(block)
            if digest.hexdigest() != self.sha256[i]:
                raise UserError(f"{path}: sha256 does not match manifest.json (corrupt or changed shard); re-run fineweb.py")
            tokens = np.memmap(path, dtype=self.dtype, mode="r", offset=self.offsets[i], shape=(self.sizes[i],))
            top = int(tokens.max()) if len(tokens) else 0
            if top >= self.vocab_size:
                raise UserError(f"{path}: token id {top} >= vocab size {self.vocab_size} of {self.tokenizer_identity}")
            self._open[i] = tokens
        return self._open[i]

    def _layout(self, epoch):
        if epoch not in self._layouts:
            n = len(self.files)
            order = np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)
            starts = np.concatenate([[0], np.cumsum([self.sizes[i] for i in order])[:-1]])
            self._layouts = {e: v for e, v in self._layouts.items() if e >= epoch - 1}  # keep it small
            self._layouts[epoch] = (order.tolist(), starts.tolist())
        return self._layouts[epoch]

    def read(self, start, n):
        """n tokens of the endless stream from position start, as int64."""
        out = np.empty(n, dtype=np.int64)
        done = 0
        while done < n:
            epoch, offset = divmod(start + done, self.tokens_per_epoch)
            order, starts = self._layout(epoch)
            j = bisect.bisect_right(starts, offset) - 1
            within = offset - starts[j]
            take = min(n - done, self.sizes[order[j]] - within)
            out[done:done + take] = self._shard(order[j])[within:within + take]
            done += take
        return out

    def next_batch(self):
        B, T = self.B, self.T
        buf = self.read(self.position + self.rank * B * T, B * T + 1)
        self.position += self.world_size * B * T
        return torch.from_numpy(buf[:-1]).view(B, T), torch.from_numpy(buf[1:]).view(B, T)

    @property
    def epoch(self):
        return self.position // self.tokens_per_epoch

    def reset(self):
        self.position = 0

    def state_dict(self):
        return {"position": int(self.position)}

    def load_state_dict(self, state):
        self.position = int(state["position"])


# ------------------------------------------------------------------------------------------------
# 6. Devices and precision
# ------------------------------------------------------------------------------------------------

def pick_device():
    """The fastest device present: an NVIDIA GPU, else Apple's GPU, else the CPU."""
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


@dataclass
class Dist:
    ddp: bool          # launched by torchrun (even with one process)
    rank: int          # this process among all processes
    local_rank: int    # this process on its machine: picks the GPU
    world_size: int
    device: str        # "cuda:3", "mps", "cpu"

    @property
    def device_type(self):
        return self.device.split(":")[0]

    @property
    def master(self):
        return self.rank == 0  # rank 0 logs, samples and writes checkpoints


def setup_distributed(device_request):
    """torchrun sets RANK, LOCAL_RANK and WORLD_SIZE for each process it starts; plain python does not."""
    device = pick_device() if device_request == "auto" else device_request
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device=cuda but no CUDA GPU is available")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError("--device=mps but MPS is not available")
    if "RANK" not in os.environ:
        return Dist(False, 0, 0, 1, device)
    rank, local_rank, world = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"])
    if device == "cuda":
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(device)
    # NCCL moves GPU tensors over NVLink/InfiniBand; gloo is the CPU implementation.
    dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return Dist(True, rank, local_rank, world, device)


def resolve_dtype(request, device_type):
    """The autocast dtype. bfloat16 has float32's range, so it needs no loss scaling; float16
    (for GPUs before Ampere) does, see GradScaler in train()."""
    if request == "auto":
        if device_type != "cuda":
            return torch.float32  # CPU/MPS autocast brings little speed and some risk
        # Real bf16 tensor cores start with Ampere; older GPUs (V100, T4) would only emulate it.
        return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[request]


def autocast(device_type, dtype):
    """Matmuls in dtype, numerically sensitive ops (softmax, losses, norms) kept in float32;
    the weights themselves stay float32 ("mixed precision")."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=dtype)


# Peak dense bf16 tensor-core FLOP/s (fp16 for V100), without sparsity, from NVIDIA's datasheets.
# Matched in order against torch.cuda.get_device_name(), so specific names come first.
PEAK_FLOPS = [
    ("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H200 NVL", 835e12), ("GH200", 989e12), ("H200", 989e12),
    ("H100", 989e12),  # SXM, e.g. "NVIDIA H100 80GB HBM3"
    ("B200", 2250e12), ("A100", 312e12), ("L40S", 362e12), ("L40", 181e12), ("L4", 121e12),
    ("RTX 4090", 165e12), ("RTX 3090", 71e12), ("V100", 125e12),
]


def peak_flops(device_name):
    """Peak FLOP/s of a GPU from its name, or None when we don't know it (then no MFU is shown)."""
    for key, flops in PEAK_FLOPS:
        if key.lower() in device_name.lower():
            return flops
    return None


def flops_per_token(model, seq_len):
    """Training FLOPs per token, PaLM paper appendix B: 6N for the matmuls over N weights (2 forward,
    4 backward) plus 12 * L * H * Q * T for attention scores and their use (H heads of size Q = C / H).
    The position table is a lookup, not a matmul, so it is not in N; the tied wte is, once (the head)."""
    c = model.config
    n = sum(p.numel() for p in model.parameters()) - model.transformer.wpe.weight.numel()
    return 6 * n + 12 * c.n_layer * c.n_embd * seq_len


# ------------------------------------------------------------------------------------------------
# 7. Training step, evaluation, sampling, the loop
# ------------------------------------------------------------------------------------------------

def train_step(model, optimizer, loader, *, grad_accum_steps, lr, grad_clip, device, amp_dtype,
               scaler=None, ddp=False):
    """One optimizer step over grad_accum_steps micro batches. `loader` is anything with
    next_batch() -> (x, y), so a benchmark can feed it synthetic tokens. Returns (mean loss,
    grad norm) as tensors on the device, without waiting for the GPU (the caller decides when to sync)."""
    device_type = device.split(":")[0]
    optimizer.zero_grad(set_to_none=True)
    loss_sum = torch.zeros((), device=device)
    for micro_step in range(grad_accum_steps):
        x, y = loader.next_batch()
        if device_type == "cuda":  # pinned host memory lets the copy overlap with compute
            x, y = x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
        else:
            x, y = x.to(device), y.to(device)
        # DDP all-reduces gradients during backward; accumulating micro steps only need that on
        # the last one, so the others skip the communication (no_sync).
        last = micro_step == grad_accum_steps - 1
        with (model.no_sync() if ddp and not last else contextlib.nullcontext()):
            with autocast(device_type, amp_dtype):
                _, loss = model(x, y)
            # Gradients add up over micro steps; dividing each loss by their number makes the
            # sum the gradient of the mean loss over the whole batch. DDP then averages over ranks.
            loss = loss / grad_accum_steps
            loss_sum += loss.detach()
            (scaler.scale(loss) if scaler is not None else loss).backward()
    if ddp:  # the logged loss is the mean over all ranks too (gloo has no AVG, so SUM / world)
        dist.all_reduce(loss_sum, op=dist.ReduceOp.SUM)
        loss_sum /= dist.get_world_size()
    if scaler is not None:
        scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip if grad_clip > 0 else float("inf"))
    for group in optimizer.param_groups:
        group["lr"] = lr
    if scaler is not None:
        scaler.step(optimizer)  # skipped if the fp16 gradients overflowed
        scaler.update()
    else:
        optimizer.step()
    return loss_sum, norm


@torch.no_grad()
def evaluate_loss(model, loader, steps, device, amp_dtype, ddp=False):
    """Mean loss over `steps` batches from the start of the loader's split (the same tokens each time)."""
    model.eval()
    loader.reset()
    total = torch.zeros((), device=device)
    for _ in range(steps):
        x, y = loader.next_batch()
        with autocast(device.split(":")[0], amp_dtype):
            _, loss = model(x.to(device), y.to(device))
        total += loss.float() / steps
    if ddp:
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        total /= dist.get_world_size()
    model.train()
    return total.item()


@torch.no_grad()
def generate(model, prompt_ids, num_samples, max_new_tokens, *, top_k=50, device="cpu",
             amp_dtype=torch.float32, generator=None):
    """Sample continuations token by token; top-k keeps only the k likeliest tokens, so the
    long tail of individually unlikely tokens cannot derail the text."""
    was_training = model.training
    model.eval()
    idx = torch.tensor(prompt_ids, dtype=torch.long, device=device).repeat(num_samples, 1)
    for _ in range(max_new_tokens):
        with autocast(device.split(":")[0], amp_dtype):
            logits, _ = model(idx[:, -model.config.block_size:])
        probs = F.softmax(logits[:, -1, :].float(), dim=-1)
        top_probs, top_ids = torch.topk(probs, min(top_k, probs.size(-1)), dim=-1)
        choice = torch.multinomial(top_probs, 1, generator=generator)  # renormalises the k probabilities
        idx = torch.cat([idx, torch.gather(top_ids, -1, choice)], dim=1)
    model.train(was_training)
    return idx.tolist()


def evaluate_hellaswag(model, hs, tokenizer, run, ddp, amp_dtype):
    """HellaSwag accuracy; each rank scores its share of the examples, then the counts are summed."""
    module, examples = hs
    counts = module.evaluate(model, examples, tokenizer, run.device, rank=run.rank, world_size=run.world_size,
                             amp_dtype=amp_dtype)
    t = torch.tensor([counts["total"], counts["correct"], counts["correct_norm"]], dtype=torch.long, device=run.device)
    if ddp:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    total, correct, correct_norm = t.tolist()
    return total, correct / max(total, 1), correct_norm / max(total, 1)


def _load_hellaswag(tc, log, tokenizer, block_size):
    """(hellaswag module, examples) when enabled and its data file exists, else None."""
    if not tc.hellaswag:
        return None
    try:
        import hellaswag  # lazily: hellaswag.py imports this file
        path = tc.hellaswag_path or hellaswag.default_data_path("val")
    except ImportError as e:
        log.print(f"HellaSwag skipped: cannot import hellaswag.py ({e})")
        return None
    if not os.path.exists(path):
        log.print(f"HellaSwag skipped: {path} not found (download it with hellaswag.py)")
        return None
    try:
        examples = hellaswag.load_examples(path)
        hellaswag.check_endings_fit(examples, tokenizer, block_size)
    except ValueError as e:  # hellaswag.py names the file and line, or the example
        raise UserError(f"{path}: {e}" if path not in str(e) else str(e)) from None
    return hellaswag, examples


class RunLog:
    """Human-readable lines to stdout and log_dir/log.txt, metrics to log_dir/metrics.jsonl (one
    JSON object per line; after a resume a step may appear twice, the later line wins).
    Only rank 0 writes."""

    def __init__(self, log_dir, enabled):
        self.enabled = enabled
        if enabled:
            os.makedirs(log_dir, exist_ok=True)
            self.text = open(os.path.join(log_dir, "log.txt"), "a", buffering=1)
            self.jsonl = open(os.path.join(log_dir, "metrics.jsonl"), "a", buffering=1)

    def print(self, message):
        if self.enabled:
            print(message, flush=True)
            self.text.write(message + "\n")

    def metrics(self, **record):
        if self.enabled:
            self.jsonl.write(json.dumps(record) + "\n")

    def close(self):
        if self.enabled:
            self.text.close()
            self.jsonl.close()


# ------------------------------------------------------------------------------------------------
# 8. Checkpoints: everything a run needs to continue bit for bit, as plain tensors and containers
# ------------------------------------------------------------------------------------------------

def rng_state():
    """This process's random generators as tensors, lists and numbers (no pickled objects)."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {"python": [version, list(internal), gauss],
            "numpy": [np_name, np_keys.tolist(), int(np_pos), int(np_has_gauss), float(np_gauss)],
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None}


def set_rng_state(state):
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def checkpoint_path(log_dir, step):
    return os.path.join(log_dir, f"ckpt_{step:06d}.pt")


def latest_checkpoint(log_dir):
    paths = glob.glob(os.path.join(log_dir, "ckpt_[0-9]*.pt"))
    return max(paths, key=lambda p: int(re.findall(r"\d+", os.path.basename(p))[0])) if paths else None


def save_checkpoint(path, obj):
    # torch.save into a temp file, fsync, rename: a crash mid-write leaves the previous checkpoints intact.
    with bpe.atomic_write(path) as f:
        torch.save(obj, f)


def load_checkpoint(path):
    """torch.load with weights_only=True: tensors and plain containers only. Unpickling anything
    else can run arbitrary code, so a checkpoint holding such an object is refused."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: checkpoint not found") from None
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        if found:
            raise UserError(f"{path}: refused, it holds a pickled Python object ({found.group(1)}) that"
                            " weights_only loading forbids; only tensors and plain containers are allowed") from None
        raise UserError(f"{path}: not a readable checkpoint (weights_only unpickler failed)") from None
    except Exception as e:  # a truncated or foreign file
        raise UserError(f"{path}: not a readable checkpoint ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None


def load_model_from_checkpoint(path, device="cpu"):
    """A trained GPT (eval mode) and the tokenizer spec it was trained with, from a ckpt_*.pt file
    or from a log dir (its latest checkpoint)."""
    if os.path.isdir(path):
        found = latest_checkpoint(path)
        if found is None:
            raise UserError(f"{path}: no ckpt_*.pt checkpoint in this directory")
        path = found
    ckpt = load_checkpoint(path)
    model = GPT(GPTConfig(**ckpt["model_config"]))
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), ckpt["config"]["tokenizer"]


# ------------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------------

def train(tc, overrides, run):
    log = RunLog(tc.log_dir, run.master)
    try:
        _train(tc, overrides, run, log)
    finally:
        log.close()


def _train(tc, overrides, run, log):
    ckpt = None
    if tc.resume:
        path = latest_checkpoint(tc.log_dir)
        if path is None:
            raise UserError(f"--resume: no ckpt_*.pt checkpoint in {tc.log_dir}")
        ckpt = load_checkpoint(path)
        known = {f.name for f in dataclasses.fields(TrainConfig)} - set(RUN_CONTROL)
        saved = {k: v for k, v in ckpt["config"].items() if k in known}
        tc = dataclasses.replace(TrainConfig(**saved), **overrides)  # the flags given now win
        log.print(f"resuming from {path} at step {ckpt['step']}")
    validate_config(tc, run.world_size)

    torch.manual_seed(tc.seed)  # same seed on every rank: identical initial weights
    random.seed(tc.seed)
    np.random.seed(tc.seed)
    if run.device_type == "cuda":
        torch.set_float32_matmul_precision("high")  # TF32 tensor cores for whatever float32 matmuls remain
    amp_dtype = resolve_dtype(tc.dtype, run.device_type)
    use_compile = tc.compile == "true" or (tc.compile == "auto" and run.device_type == "cuda")

    require_data_dir(tc.data_dir)  # the likeliest mistake first
    try:
        tokenizer = bpe.load_tokenizer(tc.tokenizer)
    except ValueError as e:  # bpe.py's message names the spec
        raise UserError(f"--tokenizer={tc.tokenizer}: {e}") from None
    except OSError as e:  # e.g. tiktoken downloading GPT-2's vocabulary while offline
        raise UserError(f"--tokenizer={tc.tokenizer}: cannot load it ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    if ckpt is not None and ckpt.get("tokenizer_identity", tokenizer.identity) != tokenizer.identity:
        raise UserError(f"--resume: the checkpoint was trained with tokenizer {ckpt['tokenizer_identity']},"
                        f" but --tokenizer={tc.tokenizer} is {tokenizer.identity}")
    B, T = tc.micro_batch_size, tc.seq_len
    grad_accum_steps = tc.total_batch_size // (B * T * run.world_size)
    train_loader = TokenShardLoader(tc.data_dir, "train", B, T, tokenizer, rank=run.rank,
                                    world_size=run.world_size, seed=tc.seed, shuffle=True)
    val_loader = TokenShardLoader(tc.data_dir, "val", B, T, tokenizer, rank=run.rank,
                                  world_size=run.world_size, shuffle=False)
    val_steps = min(tc.val_tokens, val_loader.tokens_per_epoch - 1) // (B * T * run.world_size)

    config = GPTConfig(**MODEL_PRESETS[tc.model], vocab_size=tokenizer.vocab_size)
    with torch.device(run.device):  # initialise on the GPU: seconds instead of a minute for gpt2-xl
        raw_model = GPT(config)
    if ckpt is not None:
        if ckpt["model_config"] != dataclasses.asdict(config):
            raise UserError(f"--resume: checkpoint model {ckpt['model_config']} differs from {dataclasses.asdict(config)}")
        raw_model.load_state_dict(ckpt["model"])
    optimizer = raw_model.configure_optimizers(tc.weight_decay, tc.max_lr, (tc.beta1, tc.beta2), tc.eps, run.device_type)
    # float16's narrow range underflows small gradients; GradScaler multiplies the loss up before
    # backward and divides the gradients back down, skipping steps whose gradients overflowed.
    scaler = torch.amp.GradScaler(run.device_type) if amp_dtype == torch.float16 else None
    start_step = 0
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        train_loader.load_state_dict(ckpt["loader"])
        states = ckpt["rng"]
        set_rng_state(states[run.rank] if len(states) == run.world_size else states[0])
        start_step = ckpt["step"]

    model = raw_model
    if run.ddp:
        model = DDP(model, device_ids=[run.local_rank] if run.device_type == "cuda" else None)
    if use_compile:
        # Compiling the DDP-wrapped model lets torch.compile split the graph at DDP's gradient
        # buckets, so the all-reduce of one bucket overlaps the backward of the next.
        model = torch.compile(model)

    device_name = torch.cuda.get_device_name(run.device) if run.device_type == "cuda" else run.device_type
    peak = peak_flops(device_name) if run.device_type == "cuda" and amp_dtype != torch.float32 else None
    flops_token = flops_per_token(raw_model, T)
    min_lr = tc.max_lr * tc.min_lr_ratio
    end_step = tc.max_steps if tc.stop_step < 0 else min(tc.stop_step, tc.max_steps)
    hs = _load_hellaswag(tc, log, tokenizer, config.block_size)
    prompt = tokenizer.encode("Hello, I'm a language model,")
    n_params = sum(p.numel() for p in raw_model.parameters())
    log.print(f"model {tc.model}: {n_params:,} parameters ({config.n_layer} layers, {config.n_head} heads,"
              f" width {config.n_embd}, vocab {config.vocab_size} padded to {config.padded_vocab_size})")
    log.print(f"device {device_name} x {run.world_size}, autocast {str(amp_dtype).removeprefix('torch.')},"
              f" compile {use_compile}; batch {tc.total_batch_size:,} tokens = {run.world_size} processes x"
              f" {grad_accum_steps} micro steps x {B} x {T}")
    log.print(f"data {tc.data_dir}: {train_loader.tokens_per_epoch:,} train tokens"
              f" ({tc.max_steps * tc.total_batch_size / train_loader.tokens_per_epoch:.2f} epochs),"
              f" val {val_steps} batches; log {tc.log_dir}")
    if val_steps == 0:
        raise UserError(f"{tc.data_dir}: val split has {val_loader.tokens_per_epoch} tokens, fewer than"
                        f" one batch of {run.world_size} x {B} x {T} + 1 (or --val_tokens={tc.val_tokens} is too small)")

    def save(step):
        states = [None] * run.world_size
        if run.ddp:
            dist.all_gather_object(states, rng_state())  # every rank's generators
        else:
            states = [rng_state()]
        if run.master:
            path = checkpoint_path(tc.log_dir, step)
            save_checkpoint(path, {
                "step": step, "model": raw_model.state_dict(), "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None,
                "loader": train_loader.state_dict(), "rng": states,
                "config": dataclasses.asdict(tc), "model_config": dataclasses.asdict(config),
                "tokenizer_identity": tokenizer.identity})
            log.print(f"saved {path}")

    step = start_step
    while True:
        final = step == tc.max_steps
        fresh = not (ckpt is not None and step == start_step)  # the stopped run already evaluated here
        if fresh and (step % tc.eval_interval == 0 or final):
            val_loss = evaluate_loss(model, val_loader, val_steps, run.device, amp_dtype, run.ddp)
            # bytes/token is the mean over the whole val split (manifest.json): exact when val_tokens
            # covers the split, otherwise an estimate as good as the split is uniform.
            bpb = val_loss / math.log(2) / val_loader.bytes_per_token if val_loader.bytes_per_token else None
            log.print(f"step {step:5d} | val loss {val_loss:.4f} nats/token" + (f" | {bpb:.4f} bits/byte" if bpb else ""))
            log.metrics(step=step, kind="val", loss=val_loss, bits_per_byte=bpb)
            if hs is not None:
                total, acc, acc_norm = evaluate_hellaswag(raw_model, hs, tokenizer, run, run.ddp, amp_dtype)
                log.print(f"step {step:5d} | HellaSwag acc_norm {acc_norm:.4f} (acc {acc:.4f}, {total} examples)")
                log.metrics(step=step, kind="hellaswag", acc=acc, acc_norm=acc_norm, total=total)
        if fresh and run.master and step > 0 and (step % tc.sample_interval == 0 or final):
            generator = torch.Generator(device=run.device).manual_seed(tc.seed + step)
            for i, ids in enumerate(generate(raw_model, prompt, tc.num_samples, tc.sample_tokens, device=run.device,
                                             amp_dtype=amp_dtype, generator=generator)):
                text = tokenizer.decode(ids)
                log.print(f"step {step:5d} | sample {i}: {text!r}")
                log.metrics(step=step, kind="sample", text=text)
        if step >= end_step:
            break

        t0 = time.perf_counter()
        lr = get_lr(step, tc.max_lr, min_lr, tc.warmup_steps, tc.max_steps)
        loss, norm = train_step(model, optimizer, train_loader, grad_accum_steps=grad_accum_steps, lr=lr,
                                grad_clip=tc.grad_clip, device=run.device, amp_dtype=amp_dtype,
                                scaler=scaler, ddp=run.ddp)
        loss, norm = loss.item(), norm.item()  # waits for the GPU: the step is really done
        dt = time.perf_counter() - t0
        tokens_per_s = tc.total_batch_size / dt
        mfu = tokens_per_s * flops_token / (peak * run.world_size) if peak else None
        log.print(f"step {step:5d} | loss {loss:.6f} | lr {lr:.4e} | norm {norm:.4f} | {dt * 1000:.1f} ms"
                  f" | {tokens_per_s:,.0f} tok/s" + (f" | MFU {100 * mfu:.1f}%" if mfu else ""))
        log.metrics(step=step, kind="train", loss=loss, lr=lr, grad_norm=norm, dt=dt, tokens_per_s=tokens_per_s, mfu=mfu)
        # A non-finite loss, or (without fp16's GradScaler, which skips such steps itself) a
        # non-finite gradient norm, means the weights are or are about to be NaN: never save them.
        if not math.isfinite(loss) or (scaler is None and not math.isfinite(norm)):
            last = latest_checkpoint(tc.log_dir)
            what = f"loss is {loss}" if not math.isfinite(loss) else f"gradient norm is {norm}"
            raise UserError(f"step {step}: {what}; stopping without saving. Last good checkpoint:"
                            f" {last or 'none'} (lower --max_lr, or check the data)")
        step += 1
        if step % tc.checkpoint_interval == 0 or step == end_step:
            save(step)
        if step == tc.max_steps and run.master:  # the finished model, loadable by transformers / lm-eval-harness
            raw_model.save_pretrained(os.path.join(tc.log_dir, "hf"), eot_id=tokenizer.eot_id)
            log.print(f"saved {os.path.join(tc.log_dir, 'hf')} (Hugging Face GPT-2 format)")
    if run.ddp:
        dist.barrier()  # let rank 0 finish its samples and files before the process group goes away


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if "--help" in argv or "-h" in argv:
        print(format_help())
        return 0
    run = None
    try:
        overrides = parse_overrides(argv)
        tc = TrainConfig(**overrides)
        run = setup_distributed(tc.device)
        train(tc, overrides, run)
    except UserError as e:
        raise SystemExit(f"error: {e}") from None
    finally:
        if run is not None and run.ddp and dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    # hellaswag.py does `import train_gpt2`; point that at this running module instead of a second copy.
    sys.modules.setdefault("train_gpt2", sys.modules[__name__])
    sys.exit(main())
