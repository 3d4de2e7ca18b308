"""Train GPT-2 from scratch, in one file you can read top to bottom.

    python train_gpt2.py --model=tiny --data_dir=...          # one process (CPU, MPS or one GPU)
    torchrun --standalone --nproc_per_node=8 train_gpt2.py     # GPT-2 124M on 8 GPUs, 10B tokens
    python train_gpt2.py --help                                # every setting and its origin

Reading order: 1. configuration, 2. the model, 3. optimizer and learning-rate schedule, 4. the
token-shard data loader, 5. devices and precision, 6. the training step, evaluation and
sampling, 7. the training loop, then main().
The recipe is GPT-2's architecture (Radford et al. 2019) trained with GPT-3's hyperparameters
(Brown et al. 2020, Table 2.1 and Appendix B), as in Karpathy's build-nanogpt.

What is not about training lives beside this file, each part called here in one line:
flags.py (--name=value, --help, config checks), shard_format.py (the data files),
checkpoints.py (save, load, exact resume), hf_gpt2.py (OpenAI's weights, Hugging Face format),
hellaswag_scoring.py (the benchmark), peak_flops.py (GPU datasheets), files.py and errors.py.
"""
import bisect
import contextlib
import math
import os
import random
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
import checkpoints
import flags
import hellaswag_scoring
import hf_gpt2
import shard_format
from chunked_loss import linear_cross_entropy
from errors import UserError, fail
from peak_flops import peak_flops
import run_log
from run_log import RunLog


# 1. Configuration -------------------------------------------------------------------------------

@dataclass
class GPTConfig:
    block_size: int = 1024   # longest context the model can see (GPT-2: 1024 positions)
    vocab_size: int = 50257  # GPT-2's ids: 256 bytes + 50,000 merges + <|endoftext|>
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
    # Beyond GPT-2 (issue 14): the defaults are GPT-2's; --recipe=modern (RECIPES) changes them.
    position: str = "learned"  # "rope": turn q, k by position: scores see offsets (Su et al. 2021)
    norm: str = "layernorm"    # "rmsnorm": x / RMS(x), cheaper, as good (Zhang & Sennrich 2019)
    qk_norm: bool = False      # q, k RMS-normed per head: logits stay bounded (Henry et al. 2020)
    activation: str = "gelu"   # "relu2": ReLU(x)^2, better per FLOP (So et al. 2021, Primer)
    zero_init: bool = False    # residual projections start at 0: blocks start as identities (Fixup)
    tie_head: bool = True      # head = wte's matrix (Press & Wolf 2017); False: a matrix of its own

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
    "laptop":      dict(n_layer=4, n_head=4, n_embd=128, block_size=128),  # ~1M: first_run.py
    "tiny":        dict(n_layer=2, n_head=2, n_embd=32, block_size=64),
}
# Training recipes (--recipe): GPT-2's, and later findings, each measured by bench/modern_recipe.py
# (Muon's LR: modded-nanogpt uses 0.02-0.05). Keys are TrainConfig fields; flags given win.
RECIPES = {"gpt2": {},
           "modern": dict(position="rope", norm="rmsnorm", qk_norm=True, activation="relu2",
                          zero_init=True, tie_head=False, muon_lr=0.02)}


@dataclass
class TrainConfig:
    # What to train, on what.
    model: str = "gpt2"                    # model shape, a key of MODEL_PRESETS (gpt2 = 124M)
    n_layer: int | None = None             # override the preset's number of blocks (None: keep it)
    n_head: int | None = None              # override the preset's heads per block
    n_embd: int | None = None              # override the preset's width
    block_size: int | None = None          # override the preset's context length
    dropout: float | None = None           # override the dropout rate (GPTConfig.dropout: 0)
    recipe: str = "gpt2"                   # gpt2, or modern: RoPE, RMSNorm, ReLU^2, Muon and more
    position: str | None = None            # override the recipe: learned (GPT-2) or rope
    norm: str | None = None                # override the recipe: layernorm (GPT-2) or rmsnorm
    qk_norm: bool | None = None            # override the recipe: QK-norm (GPT-2: false)
    activation: str | None = None          # override the recipe: gelu (GPT-2) or relu2
    zero_init: bool | None = None          # override the recipe: residual projections start at 0
    tie_head: bool | None = None           # override the recipe: head tied to wte (GPT-2: true)
    muon_lr: float | None = None           # override the recipe: Muon's peak LR (0: AdamW only)
    tokenizer: str = "gpt2"                # "gpt2" (tiktoken) or a bpe.py .model; as the shards say
    data_dir: str = shard_format.DEFAULT_DATA_DIR  # shards + manifest.json from fineweb.py
    log_dir: str = "log"                   # log.txt, metrics.jsonl and ckpt_*.pt are written here
    # Batch. The GPT-3 paper trains its 125M model with 0.5M-token batches (Table 2.1).
    total_batch_size: int = 524288         # tokens per optimizer step (all GPUs): 2**19 ~ 0.5M
    micro_batch_size: int = 64             # sequences per GPU per forward; 64 x 1024 fits in 80 GB
    seq_len: int = 1024                    # tokens per training sequence: GPT-2's full context
    # AdamW and the learning-rate schedule: GPT-3 paper, Table 2.1 (125M row) and Appendix B.
    max_lr: float = 6e-4                   # peak learning rate of GPT-3 Small
    min_lr_ratio: float = 0.1              # cosine decay ends at 10% of max_lr (Appendix B)
    warmup_steps: int = 715                # warmup over 375M tokens (App. B): 375e6 / 2**19 = 715
    max_steps: int = 19073                 # one pass over 10B tokens: 10e9 / 2**19 = 19,073 steps
    weight_decay: float = 0.1              # decoupled weight decay on matrices only (Appendix B)
    beta1: float = 0.9                     # Adam momentum (Appendix B)
    beta2: float = 0.95                    # Adam 2nd moment; below the usual 0.999: forgets sooner
    eps: float = 1e-8                      # Adam epsilon (Appendix B)
    grad_clip: float = 1.0                 # clip the global gradient norm (Appendix B); 0: never
    # Evaluation, samples, checkpoints (intervals as in build-nanogpt).
    eval_interval: int = 250               # steps between val-loss (and HellaSwag) evaluations
    val_tokens: int = 10485760             # tokens per val loss: build-nanogpt's 20 x 8 x 64 x 1024
    hellaswag: bool = True                 # score HellaSwag at each eval when its data file exists
    hellaswag_path: str = ""               # HellaSwag val jsonl; empty: hellaswag.py's download
    sample_interval: int = 250             # steps between text samples
    num_samples: int = 4                   # samples each time, from "Hello, I'm a language model,"
    sample_tokens: int = 32                # new tokens per sample (top-k 50 sampling)
    checkpoint_interval: int = 5000        # steps between checkpoints (and one when the run ends)
    # Run control.
    seed: int = 1337                       # seeds model init, data order and sampling
    device: str = "auto"                   # auto (cuda > mps > cpu), cuda, mps or cpu
    # Autocast dtype: auto (bfloat16 on GPUs that have it, else float16 on cuda, float32
    # elsewhere), bfloat16, float16 or float32.
    dtype: str = "auto"
    compile: str = "auto"                  # torch.compile: auto (on for cuda), true or false
    # Continue from the latest ckpt_*.pt in log_dir with its settings; flags given now override
    # them, and device, log_dir and stop_step always come from the command line.
    resume: bool = False
    overwrite: bool = False                # a fresh run may replace (delete) log_dir's checkpoints
    stop_step: int = -1                    # stop (with a checkpoint) here, same LR schedule; -1: no


def recipe_options(tc):
    """--recipe's options (RECIPES), with those given as flags on top."""
    given = {k: getattr(tc, k) for k in RECIPES["modern"] if getattr(tc, k) is not None}
    return {**RECIPES[tc.recipe], **given}


def model_config(tc, vocab_size=GPTConfig.vocab_size):
    """The preset named by --model, with shape flags (--n_layer, ...) and the recipe on top."""
    if tc.model not in MODEL_PRESETS:
        raise UserError(f"--model={tc.model}: expected one of {', '.join(MODEL_PRESETS)}")
    shape = {k: getattr(tc, k) for k in ("n_layer", "n_head", "n_embd", "block_size", "dropout")
             if getattr(tc, k) is not None}
    options = {k: v for k, v in recipe_options(tc).items() if k != "muon_lr"}
    return GPTConfig(**{**MODEL_PRESETS[tc.model], **shape, **options, "vocab_size": vocab_size})


# 2. The model: GPT-2 (a decoder-only transformer with pre-LayerNorm blocks) ---------------------

ROPE_BASE = 10000.0  # RoFormer's: pair i turns by position * 10000^(-2i / head_size) (Su et al.)


def rotary(x, start):
    """x (B, heads, T, head_size) at positions start, start+1, ..., each pair of coordinates
    (i, i + head_size/2) turned by an angle that grows with the position: a turned q and k meet
    in a dot product that depends only on how far apart they are."""
    half = x.size(-1) // 2
    freqs = ROPE_BASE ** -(torch.arange(half, device=x.device, dtype=torch.float32) / half)
    pos = torch.arange(start, start + x.size(2), device=x.device, dtype=torch.float32)
    cos, sin = torch.outer(pos, freqs).cos(), torch.outer(pos, freqs).sin()
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).type_as(x)


def norm_layer(config):  # RMSNorm without gain: the matmul it feeds can learn any scale itself
    return (nn.RMSNorm(config.n_embd, elementwise_affine=False) if config.norm == "rmsnorm"
            else nn.LayerNorm(config.n_embd))


class CausalSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        assert config.n_embd % config.n_head == 0, "n_embd must divide by n_head"
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # queries, keys, values at once
        self.c_attn.weight.stacked = 3  # q, k, v: three matrices, which Muon orthogonalises apart
        self.qk_norm, self.rope = config.qk_norm, config.position == "rope"
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.c_proj.is_residual_projection = True  # see GPT._init_weights
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x, cache=None):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        # (B, T, C) -> (B, n_head, T, head_size): each head attends independently.
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if self.qk_norm:
            q, k = F.rms_norm(q, (q.size(-1),)), F.rms_norm(k, (k.size(-1),))
        if self.rope:  # a cached run continues the positions of the tokens already in the cache
            q, k = rotary(q, len(cache or ())), rotary(k, len(cache or ()))
        if cache is not None:  # generating: earlier tokens' keys and values are kept, see KVCache
            k, v = cache.extend(k, v)
        # softmax(q k^T / sqrt(head_size)) v with a causal mask (a lone new token may see every
        # cached one); PyTorch picks a fused kernel (FlashAttention on recent GPUs) that never
        # materialises the T x T attention matrix.
        y = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1,
                                           dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side again
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)  # 4x wider, as in the transformer
        self.gelu = nn.GELU(approximate="tanh")  # GPT-2 used the tanh approximation of GELU
        self.relu2 = config.activation == "relu2"
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.c_proj.is_residual_projection = True
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        h = self.c_fc(x)
        return self.dropout(self.c_proj(F.relu(h).square() if self.relu2 else self.gelu(h)))


class Block(nn.Module):
    """GPT-2 moved LayerNorm to the input of each sub-layer (pre-LN, GPT-2 paper 2.3): the residual
    stream stays a plain sum of the sub-layers' outputs, so gradients flow straight down it and
    deep stacks train more stably than with the original transformer's post-LN."""

    def __init__(self, config):
        super().__init__()
        self.ln_1 = norm_layer(config)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = norm_layer(config)
        self.mlp = MLP(config)

    def forward(self, x, cache=None):
        x = x + self.attn(self.ln_1(x), cache)  # tokens exchange information
        x = x + self.mlp(self.ln_2(x))          # each token thinks on its own
        return x


class KVCache:
    """One block's keys and values of every token so far. Sampling adds one token at a time;
    with the cache the model reads just that token (its position continuing the cached ones)
    instead of the whole context again: a token's keys and values never change."""

    def __init__(self):
        self.k = self.v = None

    def __len__(self):
        return 0 if self.k is None else self.k.size(2)

    def extend(self, k, v):
        self.k = k if self.k is None else torch.cat([self.k, k], dim=2)
        self.v = v if self.v is None else torch.cat([self.v, v], dim=2)
        return self.k, self.v


class GPT(nn.Module):
    # Module names follow Hugging Face's GPT-2, so OpenAI's weights map one to one (hf_gpt2.py).
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.padded_vocab_size, config.n_embd),  # token embeddings
            wpe=(nn.Embedding(config.block_size, config.n_embd)            # learned positions
                 if config.position == "learned" else None),               # (RoPE: none)
            h=nn.ModuleList(Block(config) for _ in range(config.n_layer)),
            ln_f=norm_layer(config),  # pre-LN leaves the last block's output unnormalised
        ))
        self.embd_dropout = nn.Dropout(config.dropout)
        self.lm_head = nn.Linear(config.n_embd, config.padded_vocab_size, bias=False)
        # Weight tying (Press & Wolf 2017), as GPT-2 does: the output layer reuses the token
        # embedding matrix, saving 38.6M parameters at 124M and tying "read" to "write".
        if config.tie_head:
            self.lm_head.weight = self.transformer.wte.weight
        self.apply(self._init_weights)
        with torch.no_grad():  # padding rows, see GPTConfig
            self.transformer.wte.weight[config.vocab_size:].zero_()
            self.lm_head.weight[config.vocab_size:].zero_()

    def _init_weights(self, module):
        """GPT-2 init: N(0, 0.02) weights, zero biases. Each block adds its two projections into
        the residual stream, so its variance grows with 2 * n_layer additions; scaling those
        projections by 1/sqrt(2 * n_layer) keeps the stream's scale independent of depth
        (GPT-2 paper, 2.3)."""
        if module is self.lm_head and self.config.tie_head:
            return  # tied to wte, which is initialised as an embedding
        if isinstance(module, nn.Linear):
            std = 0.02
            if getattr(module, "is_residual_projection", False):
                std = 0.0 if self.config.zero_init else std / math.sqrt(2 * self.config.n_layer)
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx, targets=None, reduction="mean", caches=None):
        """idx: (B, T) token ids -> (logits (B, T, vocab_size), None), or given targets (None,
        their cross-entropy): the mean, or per token with reduction="none". caches: one
        KVCache per block when sampling (idx then follows the tokens they hold)."""
        B, T = idx.shape
        start = len(caches[0]) if caches else 0
        if start + T > self.config.block_size:
            raise ValueError(f"{start + T} tokens exceed block_size {self.config.block_size}")
        x = self.transformer.wte(idx)
        if self.transformer.wpe is not None:  # GPT-2's positions; RoPE turns q and k instead
            x = x + self.transformer.wpe(torch.arange(start, start + T, device=idx.device))
        x = self.embd_dropout(x)
        for i, block in enumerate(self.transformer.h):
            x = block(x, caches[i] if caches else None)
        x = self.transformer.ln_f(x)
        if targets is None:  # padding columns cut off: the softmax covers just the vocabulary
            return self.lm_head(x)[..., :self.config.vocab_size], None
        # The loss of those logits, made chunk by chunk so that the (B, T, vocab) floats never
        # all exist at once: 13 GB in float32 for a 64 x 1024 micro batch (chunked_loss.py).
        return None, linear_cross_entropy(x, self.lm_head.weight, targets, self.config.vocab_size,
                                          reduction)

    @classmethod
    def from_pretrained(cls, name_or_dir):
        """OpenAI's GPT-2 (gpt2 ... gpt2-xl, downloaded) or a local Hugging Face GPT-2 directory."""
        directory = hf_gpt2.locate(name_or_dir)
        model = cls(GPTConfig(**hf_gpt2.read_config(directory)))
        hf_gpt2.load_weights(model.state_dict(), directory, model.config.vocab_size)
        return model

    def save_pretrained(self, directory, tokenizer=None, eot_id=None):
        """config.json + model.safetensors for transformers' GPT2LMHeadModel, and the tokenizer's
        files for its AutoTokenizer. eot_id: <|endoftext|>'s id (the tokenizer's, or GPT-2's)."""
        if eot_id is None:  # GPT-2's is its last id
            eot_id = tokenizer.eot_id if tokenizer else self.config.vocab_size - 1
        hf_gpt2.save(directory, self.state_dict(), self.config, eot_id)
        if tokenizer is not None:
            hf_gpt2.save_tokenizer(directory, tokenizer)

    @classmethod
    def from_checkpoint(cls, path, device="cpu"):
        """A trained model (eval mode) and its tokenizer, from ckpt_*.pt or a log dir's latest."""
        ckpt = checkpoints.load_checkpoint(path)
        checkpoints.require_keys(ckpt, ("model", "model_config", "config"))
        model = cls(GPTConfig(**ckpt["model_config"]))
        model.load_state_dict(ckpt["model"])
        return model.to(device).eval(), checkpoints.tokenizer_of(ckpt)


# 3. Optimizer and learning-rate schedule --------------------------------------------------------

def configure_optimizer(model, weight_decay, learning_rate, betas, eps, device_type, muon_lr=None):
    """AdamW with weight decay on matrices (matmul weights, embeddings) only: decaying biases
    and LayerNorm gains towards zero only hurts, and they hold few parameters. Given muon_lr, the
    blocks' matrices go to Muon instead, at that peak LR, undecayed (as in Jordan et al.)."""
    params = [p for p in model.parameters() if p.requires_grad]  # parameters() lists tied wte once
    hidden = {id(p) for p in model.transformer.h.parameters() if p.dim() >= 2} if muon_lr else ()
    groups = [{"params": [p for p in params if p.dim() >= 2 and id(p) not in hidden],
               "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    if muon_lr:  # lr_scale: the group's peak LR over max_lr, see train_step
        muon = {"params": [p for p in params if id(p) in hidden], "muon": True, "weight_decay": 0.0,
                "lr_scale": muon_lr / learning_rate}
        return Muon(groups + [muon], dict(lr=learning_rate, betas=betas, eps=eps, muon=False))
    # fused=True runs the whole update in one CUDA kernel instead of several per parameter.
    return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, eps=eps,
                             fused=device_type == "cuda")


# Muon's settings (Jordan et al. 2024, "Muon: An optimizer for hidden layers in neural networks").
MUON_MOMENTUM, NEWTON_SCHULZ_STEPS = 0.95, 5
# The quintic's coefficients, picked to push small singular values up as fast as possible at the
# price of not converging: every singular value ends up oscillating within about [0.7, 1.2].
NEWTON_SCHULZ = (3.4445, -4.7750, 2.0315)


def orthogonalize(g, steps=NEWTON_SCHULZ_STEPS):
    """U V^T for g = U S V^T, approximately: every singular value made ~1, the directions kept.
    Newton-Schulz: X <- aX + b(XX^T)X + c(XX^T)^2 X maps each singular value s of X to
    as + bs^3 + cs^5 and leaves U and V alone; matmuls only, so bfloat16 suits a GPU."""
    a, b, c = NEWTON_SCHULZ
    tall = g.size(0) > g.size(1)
    x = (g.mT if tall else g).to(torch.bfloat16 if g.is_cuda else torch.float32)
    x = x / (x.norm() + 1e-7)  # the Frobenius norm is at least the largest singular value: all <= 1
    for _ in range(steps):
        gram = x @ x.mT  # the smaller of the two Gram matrices (x is wide)
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.mT if tall else x).to(g.dtype)


class Muon(torch.optim.Optimizer):
    """Muon for the param groups marked "muon", AdamW for the rest, in one optimizer: zero_grad,
    state_dict and the LR schedule work as with AdamW alone. Muon steps along the orthogonalised
    Nesterov momentum of a hidden matrix's gradient: every direction moves by the same amount,
    where a raw gradient is dominated by a few."""

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            lr, (beta1, beta2) = group["lr"], group["betas"]
            for p in (p for p in group["params"] if p.grad is not None):
                state, grad = self.state[p], p.grad
                p.mul_(1 - lr * group["weight_decay"])  # decoupled weight decay
                if group["muon"]:
                    buf = state.setdefault("momentum", torch.zeros_like(p))
                    g = grad.lerp(buf.lerp_(grad, 1 - MUON_MOMENTUM), MUON_MOMENTUM)  # Nesterov
                    # Tall ones scaled by sqrt(rows / cols): entries move ~1/sqrt(cols), any shape.
                    p.sub_(torch.cat([orthogonalize(m) * max(1, m.size(0) / m.size(1)) ** 0.5
                                      for m in g.chunk(getattr(p, "stacked", 1))]), alpha=lr)
                else:  # AdamW, as torch.optim.AdamW computes it (Loshchilov & Hutter 2019)
                    t = state["step"] = state.get("step", 0) + 1
                    m = state.setdefault("exp_avg", torch.zeros_like(p)).lerp_(grad, 1 - beta1)
                    v = state.setdefault("exp_avg_sq", torch.zeros_like(p)).mul_(beta2)
                    v.addcmul_(grad, grad, value=1 - beta2)
                    denom = (v.sqrt() / math.sqrt(1 - beta2 ** t)).add_(group["eps"])
                    p.addcdiv_(m, denom, value=-lr / (1 - beta1 ** t))


def get_lr(step, max_lr, min_lr, warmup_steps, max_steps):
    """Linear warmup to max_lr over warmup_steps, then cosine decay to min_lr at max_steps."""
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps  # step 0 already moves: no wasted step at lr 0
    if step >= max_steps:
        return min_lr
    progress = (step - warmup_steps) / (max_steps - warmup_steps)  # 0 -> 1
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)


# 4. Data: token shards written by fineweb.py (format and checks: shard_format.py) ---------------

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
        self.B, self.T, self.rank, self.world_size = batch_size, seq_len, rank, world_size
        self.seed, self.shuffle, self.vocab_size = seed, shuffle, tokenizer.vocab_size
        index = shard_format.split_index(data_dir, split, tokenizer)  # checks each shard's size
        shards, self.dtype, self.bytes_per_token = index
        self.files, self.sizes, self.sha256, self.offsets = map(list, zip(*shards))
        self.tokens_per_epoch = sum(self.sizes)
        shard_format.require_tokens(data_dir, split, self.tokens_per_epoch, world_size, batch_size,
                                    seq_len)
        self.position = 0
        self._open = {}  # shard index -> verified memory map

    def _shard(self, i):
        if i not in self._open:
            self._open[i] = shard_format.open_shard(self.files[i], self.sizes[i], self.sha256[i],
                                                    self.offsets[i], self.dtype, self.vocab_size)
        return self._open[i]

    def _layout(self, epoch):
        """The epoch's shard order and where each shard starts in it."""
        n = len(self.files)
        rng = np.random.default_rng([self.seed, epoch])  # the same order on every rank
        order = rng.permutation(n) if self.shuffle else range(n)
        starts = np.concatenate([[0], np.cumsum([self.sizes[i] for i in order])[:-1]])
        return list(order), starts.tolist()

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

    def state_dict(self):
        return {"position": int(self.position)}

    def load_state_dict(self, state):
        self.position = int(state["position"])


# 5. Devices and precision -----------------------------------------------------------------------

def pick_device(request="auto"):
    """auto: the fastest device present (an NVIDIA GPU, else Apple's GPU, else the CPU); else
    the device asked for ("cuda", "cuda:1", "mps", "cpu"), if this machine has it."""
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    present = [name for name, ok in (("cuda", torch.cuda.is_available()), ("mps", mps)) if ok]
    present.append("cpu")
    if request == "auto":
        return present[0]
    if request.split(":")[0] not in present:
        raise UserError(f"--device={request}: not a device of this machine ({', '.join(present)})")
    return request


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
    """torchrun sets RANK, LOCAL_RANK and WORLD_SIZE for each process it starts; python does not."""
    device = pick_device(device_request)
    if "RANK" not in os.environ:
        return Dist(False, 0, 0, 1, device)
    rank, local_rank, world = (int(os.environ[k]) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"))
    if device == "mps" and world > 1:  # no collective backend moves Apple-GPU tensors
        raise UserError("--device=mps: one process only (torchrun --nproc_per_node=1, or python)")
    if device == "cuda":
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(device)
    # NCCL moves GPU tensors over NVLink/InfiniBand; gloo is the CPU implementation.
    dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return Dist(True, rank, local_rank, world, device)


def resolve_dtype(request, device_type):
    """The autocast dtype. bfloat16 has float32's range, so it needs no loss scaling; float16
    (for GPUs before Ampere) does, see the GradScaler in setup()."""
    if request == "auto":
        if device_type != "cuda":
            return torch.float32  # CPU/MPS autocast brings little speed and some risk
        # Real bf16 tensor cores start with Ampere; older GPUs (V100, T4) would only emulate it.
        real_bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
        return torch.bfloat16 if real_bf16 else torch.float16
    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[request]


def autocast(device_type, dtype):
    """Matmuls in dtype, numerically sensitive ops (softmax, losses, norms) kept in float32;
    the weights themselves stay float32 ("mixed precision")."""
    return torch.autocast(device_type=device_type, dtype=dtype, enabled=dtype != torch.float32)


def flops_per_token(model, seq_len):
    """Training FLOPs per token, PaLM paper appendix B: 6N for the matmuls over N weights
    (2 forward, 4 backward) plus 12 * L * H * Q * T for attention scores and their use (H heads
    of size Q = C / H). Lookup tables are not matmuls, so N leaves out the positions'
    and, unless it is the head's too, wte."""
    c = model.config
    lookups = [model.transformer.wpe, None if c.tie_head else model.transformer.wte]
    n = sum(p.numel() for p in model.parameters()) - sum(m.weight.numel() for m in lookups if m)
    return 6 * n + 12 * c.n_layer * c.n_embd * seq_len


# 6. Training step, evaluation, sampling ---------------------------------------------------------

def train_step(model, optimizer, loader, *, grad_accum_steps, lr, grad_clip, device, amp_dtype,
               scaler=None, ddp=False):
    """One optimizer step over grad_accum_steps micro batches. `loader` is anything with
    next_batch() -> (x, y), so a benchmark can feed it synthetic tokens. Returns (mean loss,
    grad norm) as tensors on the device, without waiting for the GPU (the caller syncs)."""
    device_type = device.split(":")[0]
    optimizer.zero_grad(set_to_none=True)
    loss_sum = torch.zeros((), device=device)
    for micro_step in range(grad_accum_steps):
        x, y = loader.next_batch()
        if device_type == "cuda":  # pinned host memory lets the copy overlap with compute
            x, y = (t.pin_memory().to(device, non_blocking=True) for t in (x, y))
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
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip or math.inf)  # 0: no clip
    for group in optimizer.param_groups:  # each group on the schedule, scaled to its own peak
        group["lr"] = lr * group.get("lr_scale", 1.0)
    if scaler is not None:
        scaler.step(optimizer)  # skipped if the fp16 gradients overflowed
        scaler.update()
    else:
        optimizer.step()
    return loss_sum, norm


@torch.no_grad()
def evaluate_loss(model, loader, steps, device, amp_dtype, ddp=False):
    """Mean loss over `steps` batches from the start of the split (the same tokens each time)."""
    model.eval()
    loader.position = 0  # back to the start of the split
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
def generate(model, prompt_ids, num_samples, max_new_tokens, *, top_k=50, temperature=1.0,
             device="cpu", amp_dtype=torch.float32, generator=None, use_cache=True):
    """Sample continuations token by token: `num_samples` lists of prompt + new ids."""
    steps = list(sample_tokens(model, prompt_ids, num_samples, max_new_tokens, top_k=top_k,
                               temperature=temperature, device=device, amp_dtype=amp_dtype,
                               generator=generator, use_cache=use_cache))
    return [list(prompt_ids) + [step[i] for step in steps] for i in range(num_samples)]


@torch.no_grad()
def sample_tokens(model, prompt_ids, num_samples, max_new_tokens, *, top_k=50, temperature=1.0,
                  device="cpu", amp_dtype=torch.float32, generator=None, use_cache=True):
    """Yield the next token of each sample, step by step. Top-k keeps the k likeliest tokens, so
    the long tail of individually unlikely ones cannot derail the text; temperature < 1 sharpens
    the distribution, 0 always takes the likeliest. With the KV cache each step reads one token;
    once the context outgrows block_size, the window of the last block_size tokens is read anew
    (the positions of a shifted window differ, so the cached keys cannot be reused)."""
    was_training = model.training
    model.eval()
    block_size, caches = model.config.block_size, None
    idx = torch.tensor(prompt_ids, dtype=torch.long, device=device).repeat(num_samples, 1)
    try:
        for _ in range(max_new_tokens):
            if use_cache and caches is not None and len(caches[0]) < block_size:
                inputs = idx[:, -1:]  # the newest token; the cache holds the rest
            else:
                inputs = idx[:, -block_size:]
                caches = [KVCache() for _ in model.transformer.h] if use_cache else None
            with autocast(device.split(":")[0], amp_dtype):
                logits, _ = model(inputs, caches=caches)
            logits = logits[:, -1, :].float()
            if temperature == 0:
                next_ids = logits.argmax(dim=-1, keepdim=True)
            else:
                top_logits, top_ids = torch.topk(logits / temperature, min(top_k, logits.size(-1)))
                choice = torch.multinomial(F.softmax(top_logits, dim=-1), 1, generator=generator)
                next_ids = torch.gather(top_ids, -1, choice)
            idx = torch.cat([idx, next_ids], dim=1)
            yield next_ids.squeeze(1).tolist()
    finally:
        model.train(was_training)


# 7. The training loop ---------------------------------------------------------------------------

@dataclass
class Run:
    """Everything the loop needs, built once by setup()."""
    tc: TrainConfig
    dist: Dist
    log: RunLog
    tokenizer: object                  # bpe.load_tokenizer's: encode, decode, identity, eot_id
    raw_model: GPT
    model: nn.Module                   # raw_model, wrapped in DDP and/or torch.compile
    optimizer: torch.optim.Optimizer
    scaler: object                     # float16's GradScaler, else None
    train_loader: TokenShardLoader
    val_loader: TokenShardLoader
    val_steps: int                     # batches per val-loss estimate
    amp_dtype: torch.dtype
    grad_accum_steps: int
    hellaswag_examples: list | None
    start_step: int                    # 0, or the step a resumed run continues from
    start_evaluated: bool              # whether metrics.jsonl has start_step's val loss already


def setup(tc, ckpt, d, log):
    """Seeds, tokenizer, data, model, optimizer (restored from ckpt when resuming), wrappers;
    then says what is about to run."""
    torch.manual_seed(tc.seed)  # same seed on every rank: identical initial weights
    random.seed(tc.seed)
    np.random.seed(tc.seed)
    if d.device_type == "cuda":
        torch.set_float32_matmul_precision("high")  # TF32 tensor cores for the float32 matmuls left
    amp_dtype = resolve_dtype(tc.dtype, d.device_type)
    shard_format.require_data_dir(tc.data_dir)  # the likeliest mistake first
    tokenizer = bpe.load_tokenizer(tc.tokenizer, flag="--tokenizer")
    checkpoints.check_tokenizer(ckpt, tokenizer)  # a resumed run keeps its vocabulary
    B, T = tc.micro_batch_size, tc.seq_len
    train_loader = TokenShardLoader(tc.data_dir, "train", B, T, tokenizer, rank=d.rank,
                                    world_size=d.world_size, seed=tc.seed, shuffle=True)
    val_loader = TokenShardLoader(tc.data_dir, "val", B, T, tokenizer, rank=d.rank,
                                  world_size=d.world_size, shuffle=False)
    val_steps = min(tc.val_tokens, val_loader.tokens_per_epoch - 1) // (B * T * d.world_size)
    with torch.device(d.device):  # initialise on the GPU: seconds instead of a minute for gpt2-xl
        raw_model = GPT(model_config(tc, tokenizer.vocab_size))
    muon_lr = recipe_options(tc).get("muon_lr")
    optimizer = configure_optimizer(raw_model, tc.weight_decay, tc.max_lr, (tc.beta1, tc.beta2),
                                    tc.eps, d.device_type, muon_lr)
    # float16's narrow range underflows small gradients; GradScaler multiplies the loss up before
    # backward and divides the gradients back down, skipping steps whose gradients overflowed.
    scaler = torch.amp.GradScaler(d.device_type) if amp_dtype == torch.float16 else None
    start_step = 0 if ckpt is None else checkpoints.restore(
        ckpt, model=raw_model, optimizer=optimizer, scaler=scaler, loader=train_loader, run=d)
    model = raw_model
    if d.ddp:
        model = DDP(raw_model, device_ids=[d.local_rank] if d.device_type == "cuda" else None)
    use_compile = tc.compile == "true" or (tc.compile == "auto" and d.device_type == "cuda")
    if use_compile:
        # Compiling the DDP-wrapped model lets torch.compile split the graph at DDP's gradient
        # buckets, so the all-reduce of one bucket overlaps the backward of the next.
        model = torch.compile(model)
    hs = None if not tc.hellaswag else hellaswag_scoring.examples_for_training(
        tc.hellaswag_path, tokenizer, raw_model.config.block_size, log.print)
    run = Run(tc, d, log, tokenizer, raw_model, model, optimizer, scaler, train_loader, val_loader,
              val_steps, amp_dtype, tc.total_batch_size // (B * T * d.world_size), hs, start_step,
              start_step in run_log.logged_steps(tc.log_dir, "val") if ckpt else False)
    n_params = sum(p.numel() for p in raw_model.parameters())
    c, amp = raw_model.config, str(amp_dtype).removeprefix("torch.")
    log.print(f"model {tc.model}: {n_params:,} parameters ({c.n_layer} layers, {c.n_head} heads,"
              f" width {c.n_embd}, vocab {c.vocab_size} padded to {c.padded_vocab_size});"
              f" recipe {tc.recipe} {recipe_options(tc)}")
    log.print(f"device {device_name(d)} x {d.world_size}, autocast {amp}, compile {use_compile};"
              f" batch {tc.total_batch_size:,} tokens = {d.world_size} processes x"
              f" {run.grad_accum_steps} micro steps x {B} x {T}")
    epochs = tc.max_steps * tc.total_batch_size / train_loader.tokens_per_epoch
    log.print(f"data {tc.data_dir}: {train_loader.tokens_per_epoch:,} train tokens"
              f" ({epochs:.2f} epochs), val {val_steps} batches; log {tc.log_dir}")
    return run


def device_name(d):
    return torch.cuda.get_device_name(d.device) if d.device_type == "cuda" else d.device_type


def evaluate_and_sample(r, step, final):
    """Val loss (in nats/token and bits/byte), HellaSwag and samples, as their intervals say."""
    tc, d, log = r.tc, r.dist, r.log
    if step % tc.eval_interval == 0 or final:
        val_loss = evaluate_loss(r.model, r.val_loader, r.val_steps, d.device, r.amp_dtype, d.ddp)
        # bits/byte: bytes/token is the mean over the whole val split (manifest.json), exact when
        # val_tokens covers the split, otherwise an estimate as good as the split is uniform.
        bpt = r.val_loader.bytes_per_token
        log.val(step, val_loss, val_loss / math.log(2) / bpt if bpt else None)
        if r.hellaswag_examples is not None:  # through raw_model: compile stays on the train path
            # Each rank scores its share of the examples; the counts are summed over ranks.
            counts = hellaswag_scoring.evaluate(r.raw_model, r.hellaswag_examples, r.tokenizer,
                                                d.device, rank=d.rank, world_size=d.world_size,
                                                amp_dtype=r.amp_dtype)
            log.hellaswag(step, counts)
    if d.master and step > 0 and (step % tc.sample_interval == 0 or final):
        generator = torch.Generator(device=d.device).manual_seed(tc.seed + step)
        prompt = r.tokenizer.encode("Hello, I'm a language model,")
        for i, ids in enumerate(generate(r.raw_model, prompt, tc.num_samples, tc.sample_tokens,
                                         device=d.device, amp_dtype=r.amp_dtype,
                                         generator=generator)):
            log.sample(step, i, r.tokenizer.decode(ids))


def train(tc, overrides, d):
    """Resume or start, then step, evaluate, sample and checkpoint to max_steps (or stop_step)."""
    lock, replaced = None, None
    if d.master:  # before anything is written there: the log dir must be this run's alone
        lock, replaced = checkpoints.claim_log_dir(tc.log_dir, tc.resume, tc.overwrite)
    log = RunLog(tc.log_dir, d.master)
    if replaced:
        log.print(replaced)
    try:
        ckpt = checkpoints.load_latest(tc.log_dir) if tc.resume else None
        if ckpt is not None:  # the checkpoint's settings, with the flags given now on top
            tc = checkpoints.resumed_config(tc, ckpt, overrides, log.print)
        flags.validate(tc, model_config(tc), d.world_size)
        r = setup(tc, ckpt, d, log)
        del ckpt  # its tensors are in the model and optimizer now
        loop(r)
    finally:
        log.close()
        if lock:
            lock.close()  # the log dir is free for the next run
    if d.ddp:
        dist.barrier()  # let rank 0 finish its samples and files before the process group goes away


def loop(r):
    tc, d, log = r.tc, r.dist, r.log
    flops_token = flops_per_token(r.raw_model, tc.seq_len)
    mixed_gpu = d.device_type == "cuda" and r.amp_dtype != torch.float32
    peak = peak_flops(device_name(d)) if mixed_gpu else None  # tensor cores' FLOP/s
    min_lr = tc.max_lr * tc.min_lr_ratio
    end_step = tc.max_steps if tc.stop_step < 0 else min(tc.stop_step, tc.max_steps)
    step = r.start_step
    while True:
        if step > r.start_step or not r.start_evaluated:  # a resumed run may owe this evaluation
            evaluate_and_sample(r, step, final=step == tc.max_steps)
        if step >= end_step:
            break
        t0 = time.perf_counter()
        lr = get_lr(step, tc.max_lr, min_lr, tc.warmup_steps, tc.max_steps)
        loss, norm = train_step(r.model, r.optimizer, r.train_loader,
                                grad_accum_steps=r.grad_accum_steps, lr=lr, grad_clip=tc.grad_clip,
                                device=d.device, amp_dtype=r.amp_dtype, scaler=r.scaler, ddp=d.ddp)
        loss, norm = loss.item(), norm.item()  # waits for the GPU: the step is really done
        dt = time.perf_counter() - t0
        tokens_per_s = tc.total_batch_size / dt
        mfu = tokens_per_s * flops_token / (peak * d.world_size) if peak else None  # FLOPs used
        log.train(step, end_step, loss, lr, norm, dt, tokens_per_s, mfu)
        # A non-finite loss, or (without fp16's GradScaler, which skips such steps itself) a
        # non-finite gradient norm, means the weights are or are about to be NaN: never save them.
        if not math.isfinite(loss) or (r.scaler is None and not math.isfinite(norm)):
            what = f"loss is {loss}" if not math.isfinite(loss) else f"gradient norm is {norm}"
            raise checkpoints.diverged(step, what, tc.log_dir)
        step += 1
        if step % tc.checkpoint_interval == 0 or step == end_step:
            path = checkpoints.save(tc.log_dir, step=step, model=r.raw_model, optimizer=r.optimizer,
                                    scaler=r.scaler, loader=r.train_loader, config=tc,
                                    tokenizer=r.tokenizer, run=d)
            log.print(f"saved {path}")
    if step == tc.max_steps and d.master and hf_gpt2.not_gpt2(r.raw_model.config):
        log.print(f"skipped the Hugging Face export: {hf_gpt2.not_gpt2(r.raw_model.config)}")
    elif step == tc.max_steps and d.master:  # the finished model, for transformers, lm-eval, ...
        r.raw_model.save_pretrained(os.path.join(tc.log_dir, "hf"), tokenizer=r.tokenizer)
        log.print(f"saved {os.path.join(tc.log_dir, 'hf')} (Hugging Face format, with tokenizer)")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if "--help" in argv or "-h" in argv:
        usage = "usage: [torchrun ...] train_gpt2.py [--name=value ...]"
        print(flags.format_help(TrainConfig, usage, "\nmodel presets: " + ", ".join(MODEL_PRESETS)))
        return 0
    d = None
    try:
        overrides = flags.parse_overrides(TrainConfig, argv)
        tc = TrainConfig(**overrides)
        d = setup_distributed(tc.device)
        train(tc, overrides, d)
    except UserError as e:
        raise fail("train_gpt2.py", e) from None
    except KeyboardInterrupt:  # Ctrl-C: one line, the checkpoints written so far are intact
        raise SystemExit("train_gpt2.py: interrupted; continue with --resume") from None
    finally:
        if d is not None and d.ddp and dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
