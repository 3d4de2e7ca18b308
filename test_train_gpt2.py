"""Tests for train_gpt2.py: every claim of issue 2, on a CPU, offline.

Token shards are written here by a small helper in the shard format of README.md, so these
tests depend on nothing but train_gpt2.py and bpe.py. Models use the "tiny" preset."""
import dataclasses
import fractions
import hashlib
import json
import math
import os
import random
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import checkpoints
import chunked_loss
import flags
import run_log
import train_gpt2 as tg
from peak_flops import peak_flops

HERE = os.path.dirname(os.path.abspath(__file__))
GPT2_VOCAB, GPT2_EOT = 50257, 50256


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------

def write_shards(data_dir, splits, *, identity="tiktoken:gpt2", spec="gpt2", vocab_size=GPT2_VOCAB,
                 eot_id=GPT2_EOT, dtype="uint16", bytes_per_token=4.0):
    """splits: {"train": [array, ...], "val": [...]} -> {split}_{i:06d}.npy + manifest.json."""
    os.makedirs(data_dir, exist_ok=True)
    manifest = {"format": "gpt2-token-shards", "version": 1, "source": "test",
                "tokenizer": {"spec": spec, "identity": identity, "vocab_size": vocab_size, "eot_id": eot_id},
                "dtype": dtype, "shard_tokens": max(len(a) for arrays in splits.values() for a in arrays),
                "splits": {}}
    for split, arrays in splits.items():
        shards = []
        for i, a in enumerate(arrays):
            name = f"{split}_{i:06d}.npy"
            path = os.path.join(data_dir, name)
            np.save(path, np.asarray(a, dtype=dtype))
            with open(path, "rb") as f:
                shards.append({"file": name, "tokens": len(a), "sha256": hashlib.sha256(f.read()).hexdigest()})
        n = sum(len(a) for a in arrays)
        manifest["splits"][split] = {"documents": 1, "tokens": n, "bytes": int(n * bytes_per_token),
                                     "bytes_per_token": bytes_per_token, "shards": shards}
    with open(os.path.join(data_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    return data_dir


def random_data(data_dir, train_sizes=(3000, 2500), val_size=2000, seed=0, high=5000):
    rng = np.random.default_rng(seed)
    return write_shards(data_dir, {"train": [rng.integers(0, high, n) for n in train_sizes],
                                   "val": [rng.integers(0, high, val_size)]})


def gpt2_tokenizer():
    return tg.bpe.load_tokenizer("gpt2")


def tiny_config(**kw):
    return tg.GPTConfig(**{**tg.MODEL_PRESETS["tiny"], "vocab_size": 300, **kw})


# The modern recipe's architecture without zero_init (zero residual projections would make every
# position's logits independent of the context, and the comparison empty).
MODERN_ARCHITECTURE = dict(position="rope", norm="rmsnorm", qk_norm=True, activation="relu2", tie_head=False)


def cli(*args, nproc=None, check=True):
    """Run the real command line in a fresh process (torchrun when nproc is given)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc else [sys.executable]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd + [os.path.join(HERE, "train_gpt2.py"), *args], capture_output=True, text=True,
                            env=env, cwd=HERE, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def parse(argv):
    return flags.parse_overrides(tg.TrainConfig, argv)


def validate(tc, world_size):
    return flags.validate(tc, tg.model_config(tc), world_size)


def records_of(log_dir, kind):
    with open(os.path.join(log_dir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["kind"] == kind]


def train_records(log_dir):
    return {r["step"]: r for r in records_of(log_dir, "train")}


def write_hellaswag(path, n):
    """n examples in the official HellaSwag jsonl format."""
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"ind": i, "ctx": "the cat sees", "label": i % 4, "endings": [
                " the red ball.", " a green tree.", " the river.", " a big house."]}) + "\n")
    return str(path)


def train_losses(log_dir):
    return {step: r["loss"] for step, r in train_records(log_dir).items()}


TINY_RUN = ["--model=tiny", "--micro_batch_size=2", "--seq_len=32", "--total_batch_size=128",
            "--max_lr=3e-3", "--warmup_steps=2", "--val_tokens=128", "--eval_interval=3",
            "--sample_interval=1000", "--hellaswag=false", "--compile=false", "--device=cpu"]


def grammar_documents(n, seed=0):
    """A repetitive synthetic corpus: sentences from a tiny grammar."""
    rng = random.Random(seed)
    who = ["the cat", "a dog", "my friend", "the old man", "a small bird"]
    does = ["sees", "likes", "follows", "finds"]
    what = ["the red ball", "a green tree", "the river", "a big house"]
    return [" ".join(f"{rng.choice(who)} {rng.choice(does)} {rng.choice(what)}." for _ in range(rng.randint(2, 6)))
            for _ in range(n)]


@dataclasses.dataclass
class Corpus:
    tokenizer_path: str
    data_dir: str
    unigram_entropy: float  # nats/token of the train split's token frequencies
    bytes_per_token: float


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A 320-token bpe.py tokenizer and shards of the grammar corpus: small vocab, fast steps."""
    root = tmp_path_factory.mktemp("corpus")
    docs = grammar_documents(3000)
    trained = tg.bpe.Tokenizer()
    trained.train(docs[:500], 320, special_tokens=[tg.bpe.EOT])
    path = str(root / "grammar.model")
    trained.save(path)
    tok = tg.bpe.load_tokenizer(path)
    ids = [np.array([tok.eot_id] + tok.encode_ordinary(d)) for d in docs]
    train_ids, val_ids = np.concatenate(ids[:2700]), np.concatenate(ids[2700:])
    bytes_per_token = sum(len(d.encode()) for d in docs[2700:]) / len(val_ids)
    data = write_shards(str(root / "data"), {"train": np.array_split(train_ids, 3), "val": [val_ids]},
                        identity=tok.identity, spec=path, vocab_size=tok.vocab_size, eot_id=tok.eot_id,
                        bytes_per_token=bytes_per_token)
    counts = np.bincount(train_ids)
    p = counts[counts > 0] / len(train_ids)
    return Corpus(path, data, float(-(p * np.log(p)).sum()), bytes_per_token)


def tiny_run(corpus, *extra):
    return TINY_RUN + [f"--data_dir={corpus.data_dir}", f"--tokenizer={corpus.tokenizer_path}", *extra]


# ------------------------------------------------------------------------------------------------
# model
# ------------------------------------------------------------------------------------------------

def test_gpt2_preset_has_124M_parameters():
    with torch.device("meta"):  # shapes only: no memory, no init time
        unpadded = tg.GPT(tg.GPTConfig(**tg.MODEL_PRESETS["gpt2"], vocab_size=50257, vocab_multiple=1))
        padded = tg.GPT(tg.GPTConfig(**tg.MODEL_PRESETS["gpt2"], vocab_size=50257))
    assert unpadded.lm_head.weight is unpadded.transformer.wte.weight  # tied head
    assert sum(p.numel() for p in unpadded.parameters()) == 124_439_808
    assert padded.config.padded_vocab_size == 50304
    assert sum(p.numel() for p in padded.parameters()) == 124_439_808 + (50304 - 50257) * 768
    for name, count in [("gpt2-medium", 354_823_168), ("gpt2-large", 774_030_080), ("gpt2-xl", 1_557_611_200)]:
        with torch.device("meta"):
            model = tg.GPT(tg.GPTConfig(**tg.MODEL_PRESETS[name], vocab_multiple=1))
        assert sum(p.numel() for p in model.parameters()) == count, name


def test_init_follows_gpt2():
    torch.manual_seed(0)
    model = tg.GPT(tg.GPTConfig(n_layer=8, n_head=4, n_embd=256, block_size=64, vocab_size=1000))
    block = model.transformer.h[0]
    assert abs(block.attn.c_attn.weight.std().item() - 0.02) < 1e-3
    assert abs(block.mlp.c_proj.weight.std().item() - 0.02 / math.sqrt(16)) < 3e-4  # 1/sqrt(2 * n_layer)
    assert abs(block.attn.c_proj.weight.std().item() - 0.02 / math.sqrt(16)) < 3e-4
    assert torch.all(block.attn.c_attn.bias == 0)
    assert torch.all(model.transformer.wte.weight[1000:] == 0)  # padding rows 1000..1023
    idx = torch.randint(0, 1000, (2, 16))
    logits, _ = model(idx)
    assert logits.shape == (2, 16, 1000)
    _, loss = model(idx, torch.randint(0, 1000, (2, 16)))
    assert abs(loss.item() - math.log(1000)) < 0.1  # a fresh model is close to uniform


@pytest.mark.parametrize("options", [{}, MODERN_ARCHITECTURE], ids=["gpt2", "rope etc."])
def test_causality(options):
    torch.manual_seed(0)
    model = tg.GPT(tiny_config(**options)).eval()
    idx = torch.randint(0, 300, (2, 40))
    changed = idx.clone()
    changed[:, 25] = (changed[:, 25] + 1) % 300
    with torch.no_grad():
        a, _ = model(idx)
        b, _ = model(changed)
    assert torch.equal(a[:, :25], b[:, :25])  # earlier positions never see a later token
    assert (a[:, 25:] - b[:, 25:]).abs().max() > 1e-4


def test_dropout_only_in_training():
    torch.manual_seed(0)
    plain = tg.GPT(tiny_config()).eval()
    noisy = tg.GPT(tiny_config(dropout=0.5))
    noisy.load_state_dict(plain.state_dict())
    idx = torch.randint(0, 300, (2, 40))
    with torch.no_grad():
        reference, _ = plain(idx)
        train_a, _ = noisy.train()(idx)
        train_b, _ = noisy(idx)
        evaluated, _ = noisy.eval()(idx)
    assert (train_a - train_b).abs().max() > 1e-3   # a fresh dropout mask each forward
    assert (train_a - reference).abs().max() > 1e-3
    assert torch.equal(evaluated, reference)        # eval mode: dropout is the identity


def test_logits_match_transformers_both_ways(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    idx = torch.randint(0, 300, (2, 48))
    # transformers -> ours (vocab 300 is not a multiple of 128: exercises the padding)
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=300, n_positions=64, n_embd=48, n_layer=2, n_head=4,
                                    initializer_range=0.2)).eval()  # large init: logits far from uniform
    hf.save_pretrained(tmp_path / "hf")
    ours = tg.GPT.from_pretrained(str(tmp_path / "hf"))
    with torch.no_grad():
        expected = hf(idx).logits
        got, _ = ours(idx)
    assert got.shape == expected.shape == (2, 48, 300)
    assert (got - expected).abs().max().item() <= 1e-5
    assert expected.std() > 1.0
    # the old pytorch_model.bin format (loaded with weights_only=True)
    os.makedirs(tmp_path / "bin")
    torch.save(hf.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    (tmp_path / "bin" / "config.json").write_text((tmp_path / "hf" / "config.json").read_text())
    with torch.no_grad():
        assert (tg.GPT.from_pretrained(str(tmp_path / "bin"))(idx)[0] - expected).abs().max().item() <= 1e-5
    # ours -> transformers
    torch.manual_seed(1)
    mine = tg.GPT(tg.GPTConfig(vocab_size=300, block_size=64, n_embd=48, n_layer=2, n_head=4)).eval()
    with torch.no_grad():
        for p in mine.parameters():
            p.add_(0.1 * torch.randn_like(p))  # make biases and LayerNorms non-trivial too
    mine.save_pretrained(str(tmp_path / "ours"))
    loaded = GPT2LMHeadModel.from_pretrained(str(tmp_path / "ours")).eval()
    with torch.no_grad():
        expected, _ = mine(idx)
        got = loaded(idx).logits
    assert (got - expected).abs().max().item() <= 1e-5
    assert loaded.lm_head.weight.data_ptr() == loaded.transformer.wte.weight.data_ptr()  # tied on load
    assert json.loads((tmp_path / "ours" / "config.json").read_text())["vocab_size"] == 300


@pytest.mark.parametrize("options", [{}, MODERN_ARCHITECTURE], ids=["gpt2", "rope etc."])
def test_kv_cache_generation_equals_recomputing_the_context(options):
    """With RoPE the cached keys were turned at their own positions, and a new token's q and k
    at the cache length: the same as turning the whole context at once."""
    torch.manual_seed(0)
    model = tg.GPT(tiny_config(**options))  # block_size 64
    idx = torch.randint(0, 300, (2, 30))
    caches = [tg.KVCache() for _ in model.transformer.h]
    with torch.no_grad():
        full, _ = model(idx)
        steps = [model(idx[:, :20], caches=caches)[0]] + [model(idx[:, t:t + 1], caches=caches)[0]
                                                          for t in range(20, 30)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-5, atol=1e-5)
    assert len(caches[0]) == 30
    with pytest.raises(ValueError, match="65 tokens exceed block_size 64"):
        model(torch.zeros(2, 35, dtype=torch.long), caches=caches)
    # token for token, with top-k sampling and greedily, also once the context outgrows the
    # 64-token block (the window slides: the cache is refilled from the last 64 tokens)
    prompt = [5, 6, 7]
    for kw in (dict(top_k=50), dict(temperature=0.0), dict(temperature=0.7, top_k=5)):
        cached, recomputed = (tg.generate(model, prompt, 3, 100, use_cache=c, **kw,
                                          generator=torch.Generator().manual_seed(1)) for c in (True, False))
        assert cached == recomputed and len(cached[0]) == 103
    assert len(set(map(tuple, cached))) == 3  # the samples differ from each other
    assert tg.generate(model, prompt, 2, 0) == [prompt, prompt]
    assert model.training  # generate() restores the mode it found


def test_from_pretrained_rejects_foreign_weights(tmp_path):
    tg.GPT(tiny_config()).save_pretrained(str(tmp_path))
    config = json.loads((tmp_path / "config.json").read_text())
    config["n_layer"] = 3  # the file holds 2 blocks
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(tg.UserError, match="missing"):
        tg.GPT.from_pretrained(str(tmp_path))
    with pytest.raises(tg.UserError, match="neither a directory"):
        tg.GPT.from_pretrained(str(tmp_path / "nope"))


# ------------------------------------------------------------------------------------------------
# beyond GPT-2 (issue 14): the architecture options, each on its own
# ------------------------------------------------------------------------------------------------

def test_rope_attention_scores_depend_only_on_relative_position():
    torch.manual_seed(0)
    q, k = torch.randn(2, 3, 10, 16), torch.randn(2, 3, 10, 16)  # (B, heads, T, head_size)

    def scores(start):
        return tg.rotary(q, start) @ tg.rotary(k, start).mT  # query i against key j
    for shift in (1, 7, 1000):  # every token moved by `shift` positions: same offsets, same scores
        # (float32 angles are off by ~position * 6e-8 rad, so the tolerance grows with the shift)
        torch.testing.assert_close(scores(shift), scores(0), rtol=0, atol=1e-5 + 2e-7 * shift)
    assert (scores(0) - q @ k.mT).abs().max() > 0.1  # yet the positions do change the scores
    assert torch.allclose(tg.rotary(q, 3).norm(dim=-1), q.norm(dim=-1), atol=1e-5)  # a rotation
    # one query and one key: the score is a function of (key position - query position) alone
    qi, kj = q[:1, :1, :1], k[:1, :1, :1]
    pair = {(m, n): (tg.rotary(qi, m) * tg.rotary(kj, n)).sum().item() for m in range(6) for n in range(6)}
    for m, n in pair:  # (m, n) scores as (m - s, n - s): both moved back to the nearer one at 0
        assert pair[(m, n)] == pytest.approx(pair[(m - min(m, n), n - min(m, n))], abs=1e-5)
    assert len({round(pair[(0, n)], 4) for n in range(6)}) == 6  # different offsets, different scores


def test_rmsnorm_and_relu2_match_their_formulas():
    torch.manual_seed(0)
    norm = tg.norm_layer(tiny_config(norm="rmsnorm"))
    assert list(norm.parameters()) == []  # no gain, no bias
    x = 3 * torch.randn(4, 5, 32) + 1
    expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + torch.finfo(torch.float32).eps)
    torch.testing.assert_close(norm(x), expected, rtol=1e-6, atol=1e-6)
    assert isinstance(tg.norm_layer(tiny_config()), torch.nn.LayerNorm)
    mlp = tg.MLP(tiny_config(activation="relu2"))
    h = mlp.c_fc(x)
    torch.testing.assert_close(mlp(x), mlp.c_proj(torch.where(h > 0, h * h, 0.0)))
    assert not torch.allclose(tg.MLP(tiny_config())(x), mlp(x))  # same init (seed), other function


def test_untied_head_has_its_own_parameter():
    torch.manual_seed(0)
    tied, untied = tg.GPT(tiny_config()), tg.GPT(tiny_config(tie_head=False))
    assert tied.lm_head.weight is tied.transformer.wte.weight
    assert untied.lm_head.weight is not untied.transformer.wte.weight
    assert sum(p.numel() for p in untied.parameters()) == \
        sum(p.numel() for p in tied.parameters()) + untied.config.padded_vocab_size * 32
    assert torch.all(untied.lm_head.weight[300:] == 0) and torch.all(untied.transformer.wte.weight[300:] == 0)
    idx = torch.randint(0, 300, (2, 16))
    untied(idx, idx)[1].backward()
    assert untied.lm_head.weight.grad.abs().sum() > 0 and untied.transformer.wte.weight.grad.abs().sum() > 0
    assert not torch.equal(untied.lm_head.weight.grad, untied.transformer.wte.weight.grad)
    # FLOPs: the head is a matmul, the (untied) token table a lookup
    head = untied.lm_head.weight.numel()
    rest = sum(p.numel() for n, p in untied.named_parameters() if not n.startswith(("transformer.w", "lm_head")))
    assert tg.flops_per_token(untied, 64) == 6 * (head + rest) + 12 * 2 * 32 * 64


PARAMETER_EFFECTS = {  # option -> (state_dict keys it removes, weights it changes), same seed as GPT-2's
    "position": ("rope", {"transformer.wpe.weight"}, None),
    "norm": ("rmsnorm", {f"transformer.{m}.{p}" for m in ["ln_f", "h.0.ln_1", "h.0.ln_2", "h.1.ln_1", "h.1.ln_2"]
                         for p in ("weight", "bias")}, set()),
    "qk_norm": (True, set(), set()),
    "activation": ("relu2", set(), set()),
    "zero_init": (True, set(), {f"transformer.h.{i}.{m}.c_proj.weight" for i in (0, 1) for m in ("attn", "mlp")}),
    "tie_head": (False, set(), {"lm_head.weight"}),
}


@pytest.mark.parametrize("option", PARAMETER_EFFECTS)
def test_each_option_changes_what_it_should_and_nothing_else(option):
    value, removed, changed = PARAMETER_EFFECTS[option]
    assert getattr(tg.GPTConfig(), option) != value  # the default is GPT-2's
    torch.manual_seed(0)
    gpt2 = tg.GPT(tiny_config()).eval()
    torch.manual_seed(0)
    other = tg.GPT(tiny_config(**{option: value})).eval()
    a, b = gpt2.state_dict(), other.state_dict()
    assert set(a) - set(b) == removed and set(b) <= set(a)
    if changed is not None:  # without wpe the random draws shift, so RoPE's weights all differ
        assert {k for k in b if not torch.equal(a[k], b[k])} == changed
    if option == "zero_init":
        assert all(torch.all(b[k] == 0) for k in changed)
    idx = torch.randint(0, 300, (2, 20))
    with torch.no_grad():
        other.load_state_dict({k: v for k, v in a.items() if k in b})  # GPT-2's weights where they fit
        assert (other(idx)[0] - gpt2(idx)[0]).abs().max() > 1e-4 or option in ("zero_init", "tie_head")
    if option == "position":
        assert other.transformer.wpe is None and gpt2.transformer.wpe is not None


def test_recipe_flags_and_their_errors():
    modern = tg.model_config(tg.TrainConfig(**parse(["--model=tiny", "--recipe=modern"])))
    assert {k: getattr(modern, k) for k in tg.RECIPES["modern"] if k != "muon_lr"} == \
        {k: v for k, v in tg.RECIPES["modern"].items() if k != "muon_lr"}
    assert tg.recipe_options(tg.TrainConfig(recipe="modern"))["muon_lr"] == 0.02
    assert tg.model_config(tg.TrainConfig(model="tiny")) == tg.GPTConfig(**tg.MODEL_PRESETS["tiny"])  # gpt2
    one_off = tg.TrainConfig(**parse(["--recipe=modern", "--qk_norm=false", "--muon_lr=0"]))
    assert not tg.model_config(one_off).qk_norm and tg.model_config(one_off).position == "rope"
    assert tg.recipe_options(one_off)["muon_lr"] == 0  # 0: AdamW for every parameter
    alone = tg.TrainConfig(**parse(["--position=ROPE"]))  # one option on top of GPT-2
    assert tg.model_config(alone) == tg.GPTConfig(position="rope")
    assert flags.CHOICES["recipe"] == tuple(tg.RECIPES)
    _expect_error("--recipe=llama: expected one of gpt2, modern", parse, ["--recipe=llama"])
    _expect_error("--position=alibi: expected one of learned, rope", parse, ["--position=alibi"])
    _expect_error("--qk_norm=maybe: expected true/false/1/0", parse, ["--qk_norm=maybe"])
    _expect_error("--position=rope: the head size n_embd / n_head = 5 must be even", validate,
                  tg.TrainConfig(model="tiny", recipe="modern", n_embd=30, n_head=6), 1)
    _expect_error("--muon_lr=-1.0: must be a number in [0, ", validate, tg.TrainConfig(muon_lr=-1.0), 8)


def test_hf_export_is_for_gpt2_architectures_only(tmp_path):
    with pytest.raises(tg.UserError) as e:
        tg.GPT(tiny_config(position="rope", tie_head=False)).save_pretrained(str(tmp_path / "hf"))
    assert str(e.value) == (f"{tmp_path / 'hf'}: not saved: the Hugging Face GPT-2 format holds GPT-2's"
                            " architecture only, and this model has position='rope', tie_head=False")
    assert not (tmp_path / "hf").exists()
    tg.GPT(tiny_config(zero_init=True)).save_pretrained(str(tmp_path / "zero"))  # only its init differs
    assert (tmp_path / "zero" / "model.safetensors").exists()


def _loss_and_grads(model, idx, targets, amp_dtype=None):
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        _, loss = model(idx, targets)
    loss.backward()
    return loss.detach().double(), {n: p.grad.double().clone() for n, p in model.named_parameters()}


def _plain_loss_and_grads(model, idx, targets, amp_dtype=None):
    """The textbook formulation: the (B, T, vocab) logits, then F.cross_entropy over them."""
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        logits, _ = model(idx)
        loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
    loss.backward()
    return loss.detach().double(), {n: p.grad.double().clone() for n, p in model.named_parameters()}


def _relative(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 7 rows: many chunks and a ragged last one, even for a tiny batch."""
    monkeypatch.setitem(chunked_loss.CHUNK_BYTES, "cpu", 7 * 4 * 384)


def test_chunked_loss_equals_the_plain_cross_entropy(small_chunks):
    torch.manual_seed(0)
    model = tg.GPT(tiny_config())  # vocab 300, padded to 384 columns
    idx, targets = torch.randint(0, 300, (3, 40)), torch.randint(0, 300, (3, 40))
    assert chunked_loss.chunk_rows(384, "cpu") == 7
    loss, grads = _loss_and_grads(model, idx, targets)
    plain_loss, plain_grads = _plain_loss_and_grads(model, idx, targets)
    assert abs(loss - plain_loss) / plain_loss <= 1e-6
    for name, g in plain_grads.items():
        assert _relative(grads[name], g) <= 1e-6, name
    assert torch.all(grads["transformer.wte.weight"][300:] == 0)  # padding rows get no gradient
    # per-token losses, with ignored (-1) targets, as HellaSwag scores endings
    masked = targets.clone()
    masked[:, :25] = chunked_loss.IGNORE
    with torch.no_grad():
        _, per_token = model(idx, masked, reduction="none")
        logits, _ = model(idx)
    expected = F.cross_entropy(logits.transpose(1, 2), masked, ignore_index=-1, reduction="none")
    torch.testing.assert_close(per_token, expected, rtol=1e-6, atol=1e-6)
    assert torch.all(per_token[:, :25] == 0)
    with torch.no_grad():  # and the mean skips them
        _, mean = model(idx, masked)
    assert mean.item() == pytest.approx(expected[:, 25:].mean().item(), rel=1e-6)


def test_chunked_loss_under_autocast_is_as_accurate_as_the_plain_one(small_chunks):
    """bf16 matmuls round differently in any two formulations: the loss agrees to 1e-6, and the
    gradients are about as far from float64's as the plain formulation's own (~0.3%)."""
    torch.manual_seed(1)
    model = tg.GPT(tiny_config())
    idx, targets = torch.randint(0, 300, (3, 40)), torch.randint(0, 300, (3, 40))
    exact = tg.GPT(tiny_config()).double()
    exact.load_state_dict(model.state_dict())
    true_loss, true_grads = _plain_loss_and_grads(exact, idx, targets)
    loss, grads = _loss_and_grads(model, idx, targets, torch.bfloat16)
    plain_loss, plain_grads = _plain_loss_and_grads(model, idx, targets, torch.bfloat16)
    assert abs(loss - plain_loss) / plain_loss <= 1e-6
    assert abs(loss - true_loss) / true_loss < 1e-2
    every = lambda g: torch.cat([g[name].flatten() for name in true_grads])  # noqa: E731
    assert _relative(every(grads), every(true_grads)) <= 1.25 * _relative(every(plain_grads), every(true_grads))
    for name, g in true_grads.items():  # parameter by parameter, rounding noise varies more
        if g.norm() > 0:
            assert _relative(grads[name], g) <= max(2.5 * _relative(plain_grads[name], g), 1e-6), name


# ------------------------------------------------------------------------------------------------
# optimizer and schedule
# ------------------------------------------------------------------------------------------------

def test_lr_schedule_values():
    lr = lambda step: tg.get_lr(step, max_lr=6e-4, min_lr=6e-5, warmup_steps=715, max_steps=19073)
    assert lr(0) == pytest.approx(6e-4 / 715)
    assert lr(357) == pytest.approx(6e-4 * 358 / 715)
    assert lr(714) == pytest.approx(6e-4)                     # end of warmup
    assert lr(715) == pytest.approx(6e-4)                     # cosine starts at the peak
    assert lr((715 + 19073) // 2) == pytest.approx(3.3e-4)    # halfway down: (max + min) / 2
    assert lr(19073) == pytest.approx(6e-5)                   # end
    assert lr(30000) == pytest.approx(6e-5)
    values = [lr(s) for s in range(715, 19074, 97)]
    assert all(a >= b for a, b in zip(values, values[1:]))    # monotone decay


def test_defaults_match_the_recipe():
    tc = tg.TrainConfig()
    assert tc.total_batch_size == 2 ** 19 and tc.max_lr == 6e-4 and tc.min_lr_ratio == 0.1
    assert tc.warmup_steps == 715 and tc.max_steps == 19073 == int(10e9 / 2 ** 19)
    assert (tc.weight_decay, tc.beta1, tc.beta2, tc.eps, tc.grad_clip) == (0.1, 0.9, 0.95, 1e-8, 1.0)
    assert tc.total_batch_size % (tc.micro_batch_size * tc.seq_len * 8) == 0  # 8 GPUs, 1 micro step


def test_decay_group_is_exactly_the_matrices():
    model = tg.GPT(tiny_config())
    decay, no_decay = tg.configure_optimizer(model, 0.1, 6e-4, (0.9, 0.95), 1e-8, "cpu").param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}  # the tied head appears once, as wte
    assert {names[id(p)] for p in decay["params"]} == {n for n, p in model.named_parameters() if p.dim() >= 2}
    assert {names[id(p)] for p in no_decay["params"]} == {n for n, p in model.named_parameters() if p.dim() < 2}
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert "transformer.wte.weight" in {names[id(p)] for p in decay["params"]}
    assert "transformer.h.0.ln_1.weight" in {names[id(p)] for p in no_decay["params"]}


class FixedBatches:
    """A loader that serves consecutive B-row slices of one fixed batch."""

    def __init__(self, x, y, rows):
        self.x, self.y, self.rows, self.i = x, y, rows, 0

    def next_batch(self):
        s = slice(self.i * self.rows, (self.i + 1) * self.rows)
        self.i += 1
        return self.x[s], self.y[s]


def test_grad_accumulation_equals_one_big_batch():
    torch.manual_seed(0)
    x, y = torch.randint(0, 300, (8, 32)), torch.randint(0, 300, (8, 32))
    results = []
    for k in (1, 4):
        torch.manual_seed(1)
        model = tg.GPT(tiny_config())
        opt = tg.configure_optimizer(model, 0.1, 1e-3, (0.9, 0.95), 1e-8, "cpu")
        loss, norm = tg.train_step(model, opt, FixedBatches(x, y, 8 // k), grad_accum_steps=k, lr=1e-3,
                                   grad_clip=0.0, device="cpu", amp_dtype=torch.float32)
        results.append((loss.item(), norm.item(), [p.grad.clone() for p in model.parameters()]))
    (loss1, norm1, grads1), (loss4, norm4, grads4) = results
    assert loss1 == pytest.approx(loss4, abs=1e-6)
    assert norm1 == pytest.approx(norm4, rel=1e-5)
    assert max((a - b).abs().max().item() for a, b in zip(grads1, grads4)) <= 1e-6


# Five steps of the quintic Newton-Schulz iteration leave each singular value oscillating within
# about [0.68, 1.2], not at 1: Jordan et al. chose coefficients that raise small singular values
# fastest rather than ones that converge. Hence |s - 1| < 0.4 here. What 5 steps cannot raise is
# a singular value below ~1/300 of the largest (each step multiplies a small one by a = 3.44 at
# most): random rectangular matrices have none, a random square one may have a few near 0.
@pytest.mark.parametrize("shape", [(128, 32), (32, 128), (512, 128), (96, 32)])
def test_orthogonalize_makes_singular_values_near_one(shape):
    torch.manual_seed(0)
    g = torch.randn(shape) * torch.logspace(-1.5, 0, shape[1])  # columns of unequal scales
    assert torch.linalg.svdvals(g).max() / torch.linalg.svdvals(g).min() > 6  # far from orthogonal
    o = tg.orthogonalize(g)
    assert o.shape == g.shape and o.dtype == torch.float32
    s = torch.linalg.svdvals(o)
    assert s.min() > 0.6 and s.max() < 1.4, (s.min(), s.max())
    u, _, vt = torch.linalg.svd(g, full_matrices=False)
    uv = u @ vt  # the exact orthogonalisation: the iteration keeps g's singular vectors
    assert (o * uv).sum() / (o.norm() * uv.norm()) > 0.95
    square = torch.linalg.svdvals(tg.orthogonalize(torch.randn(64, 64)))
    assert ((square - 1).abs() < 0.4).float().mean() > 0.9  # all but the few near-zero ones


def test_muon_takes_the_hidden_matrices_and_adamw_the_rest():
    torch.manual_seed(0)
    model = tg.GPT(tiny_config(tie_head=False))
    opt = tg.configure_optimizer(model, 0.1, 1e-3, (0.9, 0.95), 1e-8, "cpu", muon_lr=0.02)
    names = {id(p): n for n, p in model.named_parameters()}
    decay, no_decay, muon = ({names[id(p)] for p in g["params"]} for g in opt.param_groups)
    assert muon == {n for n, p in model.named_parameters() if n.startswith("transformer.h.") and p.dim() == 2}
    assert decay == {"transformer.wte.weight", "transformer.wpe.weight", "lm_head.weight"}
    assert no_decay == {n for n, p in model.named_parameters() if p.dim() == 1}
    assert [(g["muon"], g["weight_decay"], g.get("lr_scale", 1.0)) for g in opt.param_groups] == \
        [(False, 0.1, 1.0), (False, 0.0, 1.0), (True, 0.0, pytest.approx(20.0))]
    # one step: the schedule's lr for AdamW, 20x it for Muon, whose update is orthogonal
    x, y = torch.randint(0, 300, (4, 32)), torch.randint(0, 300, (4, 32))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    tg.train_step(model, opt, FixedBatches(x, y, 4), grad_accum_steps=1, lr=5e-4, grad_clip=1.0,
                  device="cpu", amp_dtype=torch.float32)
    assert [g["lr"] for g in opt.param_groups] == [5e-4, 5e-4, pytest.approx(1e-2)]
    weights = dict(model.named_parameters())
    for name in ("mlp.c_fc", "mlp.c_proj", "attn.c_attn"):
        p = weights[f"transformer.h.0.{name}.weight"]
        update = (before[f"transformer.h.0.{name}.weight"] - p.detach()) / 1e-2
        # Nesterov: the (clipped) gradient pulled towards the momentum; c_attn's q, k and v are
        # orthogonalised apart; the 128 x 32 c_fc is scaled by sqrt(128 / 32)
        nesterov = p.grad.lerp(opt.state[p]["momentum"], tg.MUON_MOMENTUM)
        expected = torch.cat([tg.orthogonalize(g) for g in nesterov.chunk(3 if name == "attn.c_attn" else 1)])
        torch.testing.assert_close(update, expected * (2 if name == "mlp.c_fc" else 1), rtol=1e-4, atol=1e-4)
    wte = weights["transformer.wte.weight"]  # AdamW's first step: decay, then lr * sign(grad)
    torch.testing.assert_close(before["transformer.wte.weight"] * (1 - 5e-4 * 0.1) - wte.detach(),
                               5e-4 * torch.sign(wte.grad), rtol=0, atol=1e-5)  # eps: not quite sign


def test_muons_adamw_part_equals_torch_adamw():
    torch.manual_seed(0)
    x, y = torch.randint(0, 300, (4, 32)), torch.randint(0, 300, (4, 32))
    weights = []
    for muon in (False, True):
        torch.manual_seed(1)
        model = tg.GPT(tiny_config())
        opt = tg.configure_optimizer(model, 0.1, 1e-3, (0.9, 0.95), 1e-8, "cpu")
        if muon:  # the same groups, in Muon with no Muon group
            opt = tg.Muon([{k: v for k, v in g.items() if k in ("params", "weight_decay")} for g in opt.param_groups],
                          dict(lr=1e-3, betas=(0.9, 0.95), eps=1e-8, muon=False))
        for _ in range(3):
            tg.train_step(model, opt, FixedBatches(x, y, 4), grad_accum_steps=1, lr=1e-3, grad_clip=1.0,
                          device="cpu", amp_dtype=torch.float32)
        weights.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*weights))  # bit for bit


# ------------------------------------------------------------------------------------------------
# data loader
# ------------------------------------------------------------------------------------------------

def test_loader_ranks_read_disjoint_consecutive_windows(tmp_path):
    sizes = (700, 450, 1000, 333)
    stream = np.arange(sum(sizes))  # every token distinct: overlap would show
    parts = np.split(stream, np.cumsum(sizes)[:-1])
    write_shards(str(tmp_path), {"train": parts, "val": [stream[:100]]})
    tok = gpt2_tokenizer()
    for world in (2, 3):
        loaders = [tg.TokenShardLoader(str(tmp_path), "train", 2, 16, tok, rank=r, world_size=world, shuffle=False)
                   for r in range(world)]
        seen = []
        for _ in range(20):
            xs = [l.next_batch() for l in loaders]
            for x, y in xs:
                assert torch.equal(x.flatten()[1:], y.flatten()[:-1])  # y is x shifted by one
            seen.append(torch.cat([x.flatten() for x, _ in xs]))
        seen = torch.cat(seen).numpy()
        assert len(set(seen.tolist())) == len(seen)                 # no token twice across ranks and steps
        assert np.array_equal(seen, stream[:len(seen)])             # nothing skipped, ranks in order


def test_loader_crosses_shards_and_epochs_in_a_shuffled_order(tmp_path):
    sizes = (301, 77, 512, 250, 129)
    stream = np.arange(sum(sizes))
    parts = np.split(stream, np.cumsum(sizes)[:-1])
    write_shards(str(tmp_path), {"train": parts, "val": [stream[:100]]})
    loader = tg.TokenShardLoader(str(tmp_path), "train", 3, 7, gpt2_tokenizer(), seed=5)
    n = 3 * 7
    got = np.concatenate([loader.next_batch()[0].flatten().numpy() for _ in range(3 * len(stream) // n + 2)])
    epochs = []
    for e in range(4):
        order = np.random.default_rng([5, e]).permutation(len(parts))
        epochs.append(np.concatenate([parts[i] for i in order]))
    expected = np.concatenate(epochs)
    assert np.array_equal(got, expected[:len(got)])  # shard and epoch boundaries: nothing lost or repeated
    orders = [tuple(np.random.default_rng([5, e]).permutation(len(parts))) for e in range(3)]
    assert len(set(orders)) > 1  # the order changes from epoch to epoch
    assert loader.position // loader.tokens_per_epoch == len(got) // len(stream)  # the epoch


def test_loader_state_round_trips(tmp_path):
    random_data(str(tmp_path), train_sizes=(400, 300, 500))
    tok = gpt2_tokenizer()
    a = tg.TokenShardLoader(str(tmp_path), "train", 2, 16, tok, rank=1, world_size=2, seed=3)
    for _ in range(17):  # past the end of the first epoch
        a.next_batch()
    state = a.state_dict()
    assert all(type(v) is int for v in state.values())  # loadable with weights_only=True
    b = tg.TokenShardLoader(str(tmp_path), "train", 2, 16, tok, rank=1, world_size=2, seed=3)
    b.load_state_dict(state)
    for _ in range(10):
        (xa, ya), (xb, yb) = a.next_batch(), b.next_batch()
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


# ------------------------------------------------------------------------------------------------
# bad input: one-line errors naming the culprit
# ------------------------------------------------------------------------------------------------

def _expect_error(match, fn, *args, **kw):
    with pytest.raises(tg.UserError) as e:
        fn(*args, **kw)
    message = str(e.value)
    assert "\n" not in message
    assert match in message, message
    return message


def _loader(data_dir, tokenizer=None):
    loader = tg.TokenShardLoader(data_dir, "train", 2, 16, tokenizer or gpt2_tokenizer())
    loader.next_batch()  # the first shard is opened (and verified) here
    return loader


def test_data_errors(tmp_path):
    tok = gpt2_tokenizer()
    _expect_error("does not exist", _loader, str(tmp_path / "missing"))
    os.makedirs(tmp_path / "empty")
    _expect_error("no shards in", _loader, str(tmp_path / "empty"))
    write_shards(str(tmp_path / "none"), {"train": [], "val": [np.arange(100)]}, dtype="uint16")
    _expect_error("lists no 'train' shards", _loader, str(tmp_path / "none"))

    good = random_data(str(tmp_path / "trunc"))
    path = os.path.join(good, "train_000000.npy")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 10)
    assert "train_000000.npy" in _expect_error("truncated", _loader, good)

    good = random_data(str(tmp_path / "corrupt"))
    path = os.path.join(good, "train_000000.npy")
    data = bytearray(open(path, "rb").read())
    data[-5] ^= 0xFF
    open(path, "wb").write(bytes(data))
    tg.TokenShardLoader(good, "train", 2, 16, tok)  # sizes are fine: caught at first open
    assert "train_000000.npy" in _expect_error("sha256", _loader, good)

    bad = write_shards(str(tmp_path / "vocab"), {"train": [np.full(500, 60000)], "val": [np.arange(100)]})
    assert "train_000000.npy" in _expect_error("token id 60000 >= vocab size 50257", _loader, bad)

    other = write_shards(str(tmp_path / "other"), {"train": [np.arange(500)], "val": [np.arange(100)]},
                         identity="bpe:sha256:abc", spec="my.model", vocab_size=1024, eot_id=1023)
    message = _expect_error("shards were tokenized with bpe:sha256:abc", _loader, other)
    assert "tiktoken:gpt2" in message and "manifest.json" in message


def test_flag_errors():
    assert parse(["--max_lr=1e-3", "--resume", "--compile=false", "--hellaswag=0", "--max_steps=7"]) == \
        {"max_lr": 1e-3, "resume": True, "compile": "false", "hellaswag": False, "max_steps": 7}
    assert parse(["--resume=false"]) == {"resume": False}
    assert parse(["--compile=True", "--dtype=BFloat16"]) == {"compile": "true", "dtype": "bfloat16"}
    message = _expect_error("unknown flag '--max_learning_rate'", parse, ["--max_learning_rate=1"])
    assert "--max_lr" in message and "--seq_len" in message  # lists the valid names
    _expect_error("--max_steps=ten: expected int", parse, ["--max_steps=ten"])
    _expect_error("--max_lr=fast: expected float", parse, ["--max_lr=fast"])
    _expect_error("--resume=maybe: expected true/false/1/0", parse, ["--resume=maybe"])
    _expect_error("--dtype=fp8: expected one of", parse, ["--dtype=fp8"])
    _expect_error("--max_steps needs a value", parse, ["--max_steps"])
    _expect_error("unknown flag 'max_steps'", parse, ["max_steps=3"])


def test_batch_sizes_that_do_not_divide():
    tc = tg.TrainConfig(total_batch_size=524288, micro_batch_size=48)
    message = _expect_error("--total_batch_size=524288 is not divisible by", validate, tc, 8)
    assert "48 x 1024 x 8" in message
    validate(tg.TrainConfig(), 8)
    _expect_error("--seq_len=2048 exceeds", validate, tg.TrainConfig(seq_len=2048, total_batch_size=2048 * 64 * 8), 8)
    _expect_error("--model=gpt5", validate, tg.TrainConfig(model="gpt5"), 1)
    _expect_error("--max_lr=nan: must be a positive number", validate, tg.TrainConfig(max_lr=math.nan), 1)


@pytest.mark.parametrize("setting,message", [
    (dict(beta1=-0.1), "--beta1=-0.1: must lie in [0, 1)"), (dict(beta2=1.0), "--beta2=1.0: must lie in [0, 1)"),
    (dict(eps=0.0), "--eps=0.0: must be a positive number"),
    (dict(weight_decay=-0.1), "--weight_decay=-0.1: must be a number >= 0"),
    (dict(grad_clip=math.nan), "--grad_clip=nan: must be a number >= 0"),
    (dict(warmup_steps=-5), "--warmup_steps=-5: must be >= 0"), (dict(num_samples=-1), "--num_samples=-1: must be >= 0"),
    (dict(sample_tokens=-3), "--sample_tokens=-3: must be >= 0"), (dict(seed=2**32), "--seed=4294967296: must lie in"),
    (dict(seed=-1), "--seed=-1: must lie in"), (dict(stop_step=0), "--stop_step=0: must be a step >= 1"),
])
def test_out_of_range_settings_are_refused_before_training(setting, message):
    _expect_error(message, validate, tg.TrainConfig(**setting), 1)


def test_cli_errors_are_one_line(tmp_path, capsys):
    for argv, match in [(["--nope=1"], "unknown flag '--nope'"),
                        (["--seed=x"], "--seed=x: expected int"),
                        (["--device=cpu", "--data_dir=" + str(tmp_path / "absent"), "--log_dir=" + str(tmp_path / "log")],
                         "does not exist"),
                        (["--device=cpu", "--micro_batch_size=3", "--log_dir=" + str(tmp_path / "log")], "not divisible"),
                        (["--device=cpu", "--tokenizer=" + str(tmp_path / "no.model"), "--log_dir=" + str(tmp_path / "log"),
                          f"--data_dir={tmp_path}"], "--tokenizer=" + str(tmp_path / "no.model")),
                        (["--device=cpu", "--resume", "--log_dir=" + str(tmp_path / "log")], "no ckpt_*.pt checkpoint in")]:
        with pytest.raises(SystemExit) as e:
            tg.main(argv)
        assert str(e.value).startswith("train_gpt2.py: error: ") and match in str(e.value) and "\n" not in str(e.value)


def test_pickled_checkpoint_is_refused(tmp_path):
    path = str(tmp_path / "ckpt_000001.pt")
    torch.save({"step": 1, "model": {}, "extra": fractions.Fraction(1, 3)}, path)
    message = _expect_error("refused", checkpoints.load_checkpoint, path)
    assert path in message and "fractions.Fraction" in message
    _expect_error("refused", tg.GPT.from_checkpoint, str(tmp_path))
    open(tmp_path / "junk.pt", "wb").write(b"not a checkpoint")
    _expect_error("not a readable checkpoint", checkpoints.load_checkpoint, str(tmp_path / "junk.pt"))


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = str(tmp_path / "ckpt_000002.pt")
    checkpoints.save_checkpoint(path, {"step": 2, "w": torch.ones(3)})

    def crash_midway(obj, f):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt  # e.g. the job is killed while writing
    monkeypatch.setattr(tg.torch, "save", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        checkpoints.save_checkpoint(path, {"step": 2, "w": torch.zeros(3)})
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["ckpt_000002.pt"]  # no temp file left behind
    assert torch.equal(checkpoints.load_checkpoint(path)["w"], torch.ones(3))  # the previous one survives


def test_help_lists_every_field(capsys):
    assert tg.main(["--help"]) == 0
    out = capsys.readouterr().out
    for f in dataclasses.fields(tg.TrainConfig):
        assert f"--{f.name}={f.default}" in out
    assert "10e9 / 2**19 = 19,073 steps" in out  # the comment on max_steps
    assert "tiny" in out and "gpt2-xl" in out


def test_every_setting_has_help_from_the_dataclass():
    """--help is read from the comment beside each field (or the comment lines just above it): a
    field added without one fails here."""
    helps = flags.field_help(tg.TrainConfig)
    missing = [f.name for f in dataclasses.fields(tg.TrainConfig) if not helps.get(f.name)]
    assert missing == []
    assert helps["max_steps"].endswith("10e9 / 2**19 = 19,073 steps")  # a comment on the field's line
    assert helps["dtype"].startswith("Autocast dtype: auto (bfloat16 on GPUs")  # comment lines above it
    assert "(Table 2.1)" not in helps["micro_batch_size"]  # a section heading belongs to no field

    @dataclasses.dataclass
    class Undocumented:
        documented: int = 1  # says what it is
        bare: int = 2
    assert flags.field_help(Undocumented) == {"documented": "says what it is"}


def test_model_shape_flags_override_the_preset(corpus, tmp_path):
    overrides = parse(["--model=gpt2", "--n_layer=6", "--n_head=6", "--n_embd=384", "--dropout=0.1"])
    config = tg.model_config(tg.TrainConfig(**overrides), vocab_size=1000)
    assert (config.n_layer, config.n_head, config.n_embd, config.block_size, config.dropout,
            config.vocab_size) == (6, 6, 384, 1024, 0.1, 1000)
    assert tg.model_config(tg.TrainConfig(model="tiny")) == tg.GPTConfig(**tg.MODEL_PRESETS["tiny"])
    assert parse(["--n_layer=None"]) == {"n_layer": None}
    _expect_error("--n_layer=x: expected int", parse, ["--n_layer=x"])
    _expect_error("--n_embd=100: must be divisible by n_head=12", validate, tg.TrainConfig(n_embd=100), 8)
    _expect_error("--n_layer=0: must be positive", validate, tg.TrainConfig(n_layer=0), 8)
    _expect_error("--dropout=1.0: must lie in [0, 1)", validate, tg.TrainConfig(dropout=1.0), 8)
    _expect_error("--seq_len=64 exceeds model tiny's block_size 32", validate,
                  tg.TrainConfig(model="tiny", block_size=32, seq_len=64), 1)
    log_dir = tmp_path / "log"
    tg.main(tiny_run(corpus, f"--log_dir={log_dir}", "--max_steps=1", "--n_layer=3", "--n_embd=48",
                     "--n_head=3"))
    ckpt = checkpoints.load_checkpoint(str(log_dir))
    assert (ckpt["model_config"]["n_layer"], ckpt["model_config"]["n_embd"]) == (3, 48)
    assert "(3 layers, 3 heads, width 48," in (log_dir / "log.txt").read_text()


# ------------------------------------------------------------------------------------------------
# MFU bookkeeping
# ------------------------------------------------------------------------------------------------

def test_step_line_has_the_total_elapsed_time_and_eta(tmp_path, capsys, monkeypatch):
    clock = iter([100.0, 190.0, 400.0])  # RunLog made at 100 s; steps logged at 190 s and 400 s
    monkeypatch.setattr(run_log.time, "perf_counter", lambda: next(clock))
    log = run_log.RunLog(str(tmp_path), True)
    log.train(0, 1000, 5.0, 1e-4, 1.0, dt=2.0, tokens_per_s=1000.0, mfu=0.4)
    log.train(1, 1000, 4.0, 1e-4, 1.0, dt=4.0, tokens_per_s=1000.0, mfu=None)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("step     0/1000 | loss 5.000000 |") and " | MFU 40.0% | " in lines[0]
    assert lines[0].endswith(" | 0:01:30 elapsed, ETA 0:33:18")  # 999 steps x 2 s
    assert lines[1].endswith(" | 0:05:00 elapsed, ETA 0:49:54")  # 998 steps x mean(2 s, 4 s)
    assert run_log.TRAIN_LINE.match(lines[1]).group(1) == "1"
    log.close()


def test_apple_gpu_random_state_is_saved_and_multi_process_mps_refused(monkeypatch):
    """Faked (this machine has no Apple GPU): the MPS generator goes into checkpoints and comes
    back; states saved before MPS support still load; torchrun on MPS is a one-line error."""
    generator = {"state": torch.tensor([1, 2, 3], dtype=torch.uint8)}
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.mps, "get_rng_state", lambda: generator["state"].clone())
    monkeypatch.setattr(torch.mps, "set_rng_state", lambda s: generator.update(state=s))
    state = checkpoints.rng_state()
    assert torch.equal(state["mps"], torch.tensor([1, 2, 3], dtype=torch.uint8))
    generator["state"] = torch.zeros(3, dtype=torch.uint8)
    checkpoints.set_rng_state(state)
    assert torch.equal(generator["state"], torch.tensor([1, 2, 3], dtype=torch.uint8))
    checkpoints.set_rng_state({k: v for k, v in state.items() if k != "mps"})  # an older checkpoint
    assert tg.pick_device("mps") == "mps"
    monkeypatch.setenv("RANK", "0"), monkeypatch.setenv("LOCAL_RANK", "0"), monkeypatch.setenv("WORLD_SIZE", "2")
    _expect_error("--device=mps: one process only", tg.setup_distributed, "mps")


def test_auto_dtype_is_fp16_on_gpus_that_only_emulate_bf16(monkeypatch):
    # torch's is_bf16_supported() says True on a V100/T4 (emulation); only real bf16 counts.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert tg.resolve_dtype("auto", "cuda") == torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)  # Ampere and later
    assert tg.resolve_dtype("auto", "cuda") == torch.bfloat16
    assert tg.resolve_dtype("auto", "cpu") == torch.float32 and tg.resolve_dtype("float16", "cpu") == torch.float16


def test_peak_flops_and_flops_per_token():
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops("NVIDIA H100 PCIe") == 756e12
    assert peak_flops("NVIDIA H200") == 989e12 and peak_flops("NVIDIA H200 NVL") == 835e12
    assert peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_flops("NVIDIA L40S") == 362e12 and peak_flops("NVIDIA L4") == 121e12
    assert peak_flops("Some Future GPU") is None
    with torch.device("meta"):
        model = tg.GPT(tg.GPTConfig())
    # issue 7: ~855 MFLOP per token for 124M at T = 1024
    assert tg.flops_per_token(model, 1024) == pytest.approx(855e6, rel=0.005)


# ------------------------------------------------------------------------------------------------
# whole runs
# ------------------------------------------------------------------------------------------------

def test_ddp_two_processes_match_one_process(corpus, tmp_path):
    # Summing the micro-batch gradients in another order changes them by float32 rounding (~1e-7);
    # Adam divides by sqrt(v), which enlarges that on near-zero gradients to a fraction of lr, so
    # the weights are compared at a small lr where that stays far below 1e-5 (each step moves them ~lr).
    hellaswag = write_hellaswag(tmp_path / "hellaswag_val.jsonl", 7)  # odd: ranks get 4 and 3
    common = tiny_run(corpus, "--max_steps=4", "--total_batch_size=256", "--max_lr=3e-4",
                      "--hellaswag=true", f"--hellaswag_path={hellaswag}")
    cli(*common, f"--log_dir={tmp_path / 'one'}")                  # 1 process x 4 micro steps x 2 x 32
    cli(*common, f"--log_dir={tmp_path / 'two'}", nproc=2)         # 2 ranks x 2 micro steps x 2 x 32
    hs_one, hs_two = (records_of(tmp_path / d, "hellaswag") for d in ("one", "two"))
    assert [r["step"] for r in hs_one] == [r["step"] for r in hs_two] == [0, 3, 4]
    assert all(r["total"] == 7 for r in hs_one + hs_two)  # the ranks' shares add up to the whole set
    assert [r["acc_norm"] for r in hs_one] == [r["acc_norm"] for r in hs_two]
    one, two = train_records(tmp_path / "one"), train_records(tmp_path / "two")
    assert sorted(one) == sorted(two) == [0, 1, 2, 3]
    for s in one:
        assert abs(one[s]["loss"] - two[s]["loss"]) <= 1e-5
        assert one[s]["grad_norm"] == pytest.approx(two[s]["grad_norm"], rel=1e-5)  # gradients averaged, not summed
    a = torch.load(tmp_path / "one" / "ckpt_000004.pt", weights_only=True)
    b = torch.load(tmp_path / "two" / "ckpt_000004.pt", weights_only=True)
    assert max((a["model"][k] - b["model"][k]).abs().max().item() for k in a["model"]) <= 1e-5
    assert len(b["rng"]) == 2  # each rank's generators are saved
    assert a["loader"] == b["loader"] == {"position": 4 * 256}


def test_modern_recipe_ddp_two_processes_match_one_process(corpus, tmp_path):
    """Muon under DDP: gradients are all-reduced before the step, so every rank orthogonalises the
    same momentum and takes the same step; 2 ranks x 2 micro steps = 1 process x 4 micro steps."""
    common = tiny_run(corpus, "--recipe=modern", "--max_steps=4", "--total_batch_size=256",
                      "--max_lr=3e-4", "--muon_lr=2e-3")
    cli(*common, f"--log_dir={tmp_path / 'one'}")
    out = cli(*common, f"--log_dir={tmp_path / 'two'}", nproc=2).stdout
    assert "recipe modern" in out and "'muon_lr': 0.002" in out
    one, two = train_records(tmp_path / "one"), train_records(tmp_path / "two")
    assert sorted(one) == sorted(two) == [0, 1, 2, 3]
    for s in one:
        assert abs(one[s]["loss"] - two[s]["loss"]) <= 1e-5
        assert one[s]["grad_norm"] == pytest.approx(two[s]["grad_norm"], rel=1e-5)
    a = torch.load(tmp_path / "one" / "ckpt_000004.pt", weights_only=True)
    b = torch.load(tmp_path / "two" / "ckpt_000004.pt", weights_only=True)
    assert max((a["model"][k] - b["model"][k]).abs().max().item() for k in a["model"]) <= 1e-5
    assert a["optimizer"]["param_groups"][2]["muon"] and b["optimizer"]["param_groups"][2]["muon"]


def test_exact_resume_with_muon(corpus, tmp_path):
    common = tiny_run(corpus, "--recipe=modern", "--max_steps=6", "--checkpoint_interval=100")
    cli(*common, f"--log_dir={tmp_path / 'straight'}")
    cli(*common, f"--log_dir={tmp_path / 'resumed'}", "--stop_step=3")
    cli(f"--log_dir={tmp_path / 'resumed'}", "--resume", "--device=cpu")  # recipe from the checkpoint
    straight, resumed = train_losses(tmp_path / "straight"), train_losses(tmp_path / "resumed")
    assert sorted(resumed) == list(range(6)) and straight == resumed  # bit-identical floats
    a = torch.load(tmp_path / "straight" / "ckpt_000006.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "ckpt_000006.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]
    kinds = set()
    for i, state in a["optimizer"]["state"].items():
        kinds |= set(state)
        assert state.keys() == b["optimizer"]["state"][i].keys()
        assert all(torch.equal(torch.as_tensor(v), torch.as_tensor(b["optimizer"]["state"][i][k])) for k, v in state.items())
    assert kinds == {"momentum", "step", "exp_avg", "exp_avg_sq"}  # Muon's and AdamW's state, both restored
    assert a["model_config"]["position"] == "rope" and "lm_head.weight" in a["model"]


def test_modern_run_samples_scores_hellaswag_and_skips_the_hf_export(corpus, tmp_path):
    log_dir = tmp_path / "log"
    hellaswag = write_hellaswag(tmp_path / "hellaswag_val.jsonl", 3)
    tg.main(tiny_run(corpus, "--recipe=modern", f"--log_dir={log_dir}", "--max_steps=2", "--eval_interval=2",
                     "--sample_interval=2", "--num_samples=1", "--hellaswag=true", f"--hellaswag_path={hellaswag}"))
    assert [r["step"] for r in records_of(log_dir, "hellaswag")] == [0, 2]
    assert len(records_of(log_dir, "sample")) == 1
    log_text = (log_dir / "log.txt").read_text()
    assert "skipped the Hugging Face export: the Hugging Face GPT-2 format holds GPT-2's architecture only," \
           " and this model has position='rope', norm='rmsnorm', qk_norm=True, activation='relu2'," \
           " tie_head=False" in log_text
    assert not (log_dir / "hf").exists()
    model, tok = tg.GPT.from_checkpoint(str(log_dir))
    assert model.config.position == "rope" and not model.config.tie_head
    assert len(tg.generate(model, tok.encode("the cat"), 1, 5)[0]) == len(tok.encode("the cat")) + 5


# torch.compile's CPU backend (inductor) builds C++ kernels with the system compiler.
CXX = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("clang++")
needs_cxx = pytest.mark.skipif(CXX is None, reason="torch.compile on CPU (inductor) needs a C++ compiler; none found")


@needs_cxx
def test_compiled_training_equals_eager(corpus, tmp_path):
    """--compile=true on the CPU, the path every GPU run takes: the same losses as eager over
    several steps (inductor may reorder float sums: 1e-5), then val loss through the compiled
    model in eval mode, and samples."""
    common = tiny_run(corpus, "--max_steps=4", "--eval_interval=2", "--sample_interval=4", "--num_samples=1")
    cli(*common, "--compile=false", f"--log_dir={tmp_path / 'eager'}")
    out = cli(*common, "--compile=true", f"--log_dir={tmp_path / 'compiled'}").stdout
    assert "compile True" in out
    eager, compiled = train_losses(tmp_path / "eager"), train_losses(tmp_path / "compiled")
    assert sorted(compiled) == [0, 1, 2, 3]
    for step in eager:
        assert compiled[step] == pytest.approx(eager[step], rel=1e-5, abs=1e-5)
    val_eager, val_compiled = (records_of(tmp_path / d, "val") for d in ("eager", "compiled"))
    assert [r["step"] for r in val_compiled] == [0, 2, 4]
    for a, b in zip(val_eager, val_compiled):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
    assert len(records_of(tmp_path / "compiled", "sample")) == 1


@needs_cxx
def test_ddp_with_compile_trains(corpus, tmp_path):
    """Two gloo processes, each compiling the DDP-wrapped model (graph split at the gradient
    buckets): the run trains like the one-process eager run of the same global batch."""
    common = tiny_run(corpus, "--max_steps=2", "--total_batch_size=256", "--max_lr=3e-4")
    cli(*common, f"--log_dir={tmp_path / 'one'}")
    cli(*common, "--compile=true", f"--log_dir={tmp_path / 'two'}", nproc=2)
    one, two = train_losses(tmp_path / "one"), train_losses(tmp_path / "two")
    assert sorted(two) == [0, 1]
    for step in one:
        assert two[step] == pytest.approx(one[step], abs=1e-4)
    assert os.path.exists(tmp_path / "two" / "ckpt_000002.pt")


@needs_cxx
def test_compiled_modern_recipe_step_equals_eager(corpus, tmp_path):
    """One compiled step of the modern recipe (RoPE, RMSNorm, QK-norm, ReLU^2 in the graph; Muon
    outside it), then val loss through the compiled model: as eager."""
    common = tiny_run(corpus, "--recipe=modern", "--max_steps=1", "--eval_interval=1", "--num_samples=0")
    cli(*common, "--compile=false", f"--log_dir={tmp_path / 'eager'}")
    assert "compile True" in cli(*common, "--compile=true", f"--log_dir={tmp_path / 'compiled'}").stdout
    assert train_losses(tmp_path / "compiled")[0] == pytest.approx(train_losses(tmp_path / "eager")[0], rel=1e-5)
    val_eager, val_compiled = (records_of(tmp_path / d, "val") for d in ("eager", "compiled"))
    assert [r["step"] for r in val_compiled] == [0, 1]
    for a, b in zip(val_eager, val_compiled):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)


def test_a_log_dir_belongs_to_one_run(corpus, tmp_path):
    log_dir = tmp_path / "log"
    lock, _ = checkpoints.claim_log_dir(str(log_dir), resume=False, overwrite=False)  # a run in progress
    second = cli(*tiny_run(corpus, f"--log_dir={log_dir}", "--max_steps=1"), check=False)
    assert second.returncode == 1
    assert second.stderr.strip() == (f"train_gpt2.py: error: --log_dir={log_dir} is in use by another run"
                                      f" (pid {os.getpid()}); wait for it to end, or pass another --log_dir")
    assert sorted(os.listdir(log_dir)) == ["run.lock"]  # nothing of the refused run was written
    lock.close()  # the first run ends (a killed process releases its lock the same way)
    tg.main(tiny_run(corpus, f"--log_dir={log_dir}", "--max_steps=2"))
    before = {p: (log_dir / p).read_bytes() for p in ("ckpt_000002.pt", "metrics.jsonl")}
    # a fresh run into a finished run's log dir is refused, and writes nothing there
    with pytest.raises(SystemExit) as e:
        tg.main(tiny_run(corpus, f"--log_dir={log_dir}", "--max_steps=3"))
    assert "holds another run (1 checkpoints, the latest ckpt_000002.pt): continue it with --resume," \
           " replace it with --overwrite" in str(e.value)
    assert {p: (log_dir / p).read_bytes() for p in before} == before
    # --overwrite replaces it, saying what it removed
    (log_dir / ".ckpt_000001.pt.x1y2z3.tmp").write_bytes(b"half a checkpoint")  # from a killed save
    tg.main(tiny_run(corpus, f"--log_dir={log_dir}", "--max_steps=3", "--overwrite"))
    log_text = (log_dir / "log.txt").read_text()
    assert log_text.startswith("--overwrite: removed the previous run's ckpt_000002.pt, metrics.jsonl, log.txt, hf\n")
    assert sorted(p for p in os.listdir(log_dir) if "ckpt" in p) == ["ckpt_000003.pt"]  # temp file gone too
    assert sorted(train_losses(log_dir)) == [0, 1, 2]


def test_resume_finishes_what_the_stopped_run_owed(corpus, tmp_path, monkeypatch):
    """Killed right after its final checkpoint, a run has not yet written its final val loss,
    samples and hf/ export: --resume at that step writes them."""
    log_dir = tmp_path / "log"
    real_save = checkpoints.save

    def save_then_die(*args, **kwargs):
        path = real_save(*args, **kwargs)
        if kwargs["step"] == 4:
            raise KeyboardInterrupt  # the job is killed just after writing the checkpoint
        return path
    monkeypatch.setattr(checkpoints, "save", save_then_die)
    with pytest.raises(SystemExit, match="^train_gpt2.py: interrupted; continue with --resume$"):
        tg.main(tiny_run(corpus, f"--log_dir={log_dir}", "--max_steps=4", "--eval_interval=2",
                         "--sample_interval=4", "--num_samples=1"))
    monkeypatch.undo()
    assert not (log_dir / "hf").exists() and 4 not in run_log.logged_steps(str(log_dir), "val")
    tg.main(["--resume", f"--log_dir={log_dir}"])
    assert 4 in run_log.logged_steps(str(log_dir), "val") and 4 in run_log.logged_steps(str(log_dir), "sample")
    assert (log_dir / "hf" / "model.safetensors").exists()
    assert [r["step"] for r in records_of(log_dir, "train")] == [0, 1, 2, 3]  # no step trained twice
    # a resumed run whose evaluation had been written does not redo it
    tg.main(["--resume", f"--log_dir={log_dir}"])
    assert [r["step"] for r in records_of(log_dir, "val")] == [0, 2, 4]


def test_exact_resume(corpus, tmp_path):
    common = tiny_run(corpus, "--max_steps=8", "--checkpoint_interval=100")
    cli(*common, f"--log_dir={tmp_path / 'straight'}")
    cli(*common, f"--log_dir={tmp_path / 'resumed'}", "--stop_step=4")
    assert sorted(os.listdir(tmp_path / "resumed")) == ["ckpt_000004.pt", "log.txt", "metrics.jsonl", "run.lock"]
    out = cli(f"--log_dir={tmp_path / 'resumed'}", "--resume", "--device=cpu").stdout  # settings come from the checkpoint
    assert "resuming from" in out and "ckpt_000004.pt" in out
    straight, resumed = train_losses(tmp_path / "straight"), train_losses(tmp_path / "resumed")
    assert sorted(resumed) == list(range(8))
    assert straight == resumed  # bit-identical floats
    a = torch.load(tmp_path / "straight" / "ckpt_000008.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "ckpt_000008.pt", weights_only=True)
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    assert all(torch.equal(a["optimizer"]["state"][i]["exp_avg_sq"], b["optimizer"]["state"][i]["exp_avg_sq"])
               for i in a["optimizer"]["state"])
    assert a["loader"] == b["loader"] and a["step"] == 8
    assert set(a) >= {"model", "optimizer", "scaler", "step", "loader", "rng", "config", "model_config"}
    assert set(a["rng"][0]) == {"python", "numpy", "torch", "cuda", "mps"}
    model, tok = tg.GPT.from_checkpoint(str(tmp_path / "resumed" / "ckpt_000008.pt"))
    assert tok.spec == corpus.tokenizer_path and tok.identity == b["tokenizer_identity"] and not model.training
    assert torch.equal(model.transformer.h[1].mlp.c_fc.weight, a["model"]["transformer.h.1.mlp.c_fc.weight"])


def test_a_checkpoint_carries_its_tokenizer(corpus, tmp_path, monkeypatch):
    """Loaded from another directory, after the tokenizer file is gone, the checkpoint still gives
    its model and the very tokenizer it was trained with."""
    tokenizer_path = tmp_path / "moved.model"
    tokenizer_path.write_bytes(open(corpus.tokenizer_path, "rb").read())
    tg.main(tiny_run(corpus, f"--log_dir={tmp_path / 'log'}", f"--tokenizer={tokenizer_path}", "--max_steps=1"))
    original = tg.bpe.load_tokenizer(str(tokenizer_path))
    os.remove(tokenizer_path)
    os.makedirs(tmp_path / "elsewhere")
    monkeypatch.chdir(tmp_path / "elsewhere")
    model, tok = tg.GPT.from_checkpoint("../log")
    assert tok.identity == original.identity and tok.vocab_size == model.config.vocab_size == 320
    text = "the old man follows a small bird."
    assert tok.encode_ordinary(text) == original.encode_ordinary(text)
    # a checkpoint from before tokenizers were stored: its recorded path is used
    ckpt = torch.load(tmp_path / "log" / "ckpt_000001.pt", weights_only=True)
    del ckpt["tokenizer_text"]
    torch.save(ckpt, tmp_path / "old.pt")
    with pytest.raises(tg.UserError, match="moved.model'?: not 'gpt2' and not a bpe.py model file"):
        tg.GPT.from_checkpoint(str(tmp_path / "old.pt"))


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(corpus, tmp_path, monkeypatch):
    log_dir = str(tmp_path / "log")
    tg.main(tiny_run(corpus, f"--log_dir={log_dir}", "--max_steps=6", "--stop_step=2"))
    good = torch.load(os.path.join(log_dir, "ckpt_000002.pt"), weights_only=True)
    real_get_lr = tg.get_lr
    monkeypatch.setattr(tg, "get_lr", lambda step, *a: math.nan if step == 2 else real_get_lr(step, *a))
    with pytest.raises(SystemExit) as e:  # a NaN learning rate poisons the weights at step 2
        tg.main([f"--log_dir={log_dir}", "--resume"])
    message = str(e.value)
    assert "step 3: loss is nan" in message and "ckpt_000002.pt" in message and "\n" not in message
    assert sorted(p for p in os.listdir(log_dir) if p.endswith(".pt")) == ["ckpt_000002.pt"]
    again = torch.load(os.path.join(log_dir, "ckpt_000002.pt"), weights_only=True)
    assert all(torch.equal(good["model"][k], again["model"][k]) for k in good["model"])


def test_divergence_names_the_last_checkpoint_before_the_loss_rose(tmp_path):
    losses = [5.0, 4.0, 3.5, 3.2, 3.1, 3.0, 3.05, 3.9, 6.0, 9.0]  # steady, then blowing up from step 7
    with open(tmp_path / "metrics.jsonl", "w") as f:
        for step, loss in enumerate(losses):
            f.write(json.dumps({"step": step, "kind": "train", "loss": loss}) + "\n")
    for step in (3, 6, 8, 10):
        (tmp_path / f"ckpt_{step:06d}.pt").write_bytes(b"")
    message = str(checkpoints.diverged(10, "loss is nan", str(tmp_path)))
    # ckpt 6 follows a loss of 3.0 (the best so far); ckpt 8 and 10 follow 3.9 and 9.0
    assert message == (f"step 10: loss is nan; stopping without saving. Last good checkpoint: {tmp_path}/ckpt_000006.pt"
                       " (ckpt_000010.pt, ckpt_000008.pt saved while the loss was already rising: delete them"
                       " before --resume) (lower --max_lr, or check the data)")
    for step in (3, 6):
        os.remove(tmp_path / f"ckpt_{step:06d}.pt")
    assert "No checkpoint is trustworthy (ckpt_000010.pt, ckpt_000008.pt saved while" in \
        str(checkpoints.diverged(10, "loss is nan", str(tmp_path)))


def test_non_finite_gradient_stops_before_its_weights_are_saved(corpus, tmp_path, monkeypatch):
    """A finite loss with an inf gradient (clipping turns it into NaN weights) must not be checkpointed."""
    log_dir = str(tmp_path / "log")
    real_step = tg.train_step

    def overflowing_step(model, *args, **kwargs):
        loss, norm = real_step(model, *args, **kwargs)
        if kwargs["lr"] != tg.get_lr(0, 3e-3, 3e-4, 2, 6):  # from the second step on
            with torch.no_grad():
                next(model.parameters()).fill_(math.nan)
            norm = torch.tensor(math.inf)
        return loss, norm

    monkeypatch.setattr(tg, "train_step", overflowing_step)
    with pytest.raises(SystemExit) as e:
        tg.main(tiny_run(corpus, f"--log_dir={log_dir}", "--max_steps=6", "--checkpoint_interval=2"))
    assert "step 1: gradient norm is inf; stopping without saving" in str(e.value) and "\n" not in str(e.value)
    assert not [p for p in os.listdir(log_dir) if p.endswith(".pt")]


def test_resume_writes_where_it_was_found_and_checks_the_tokenizer(corpus, tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    tg.main(tiny_run(corpus, f"--log_dir={old}", "--max_steps=4", "--stop_step=2"))
    os.rename(old, new)  # a run directory moved (or copied) elsewhere
    tg.main(["--resume", f"--log_dir={new}", "--device=cpu"])
    assert sorted(p for p in os.listdir(new) if p.endswith(".pt")) == ["ckpt_000002.pt", "ckpt_000004.pt"]
    assert not old.exists()
    log_text = (new / "log.txt").read_text()
    assert "settings from the checkpoint that differ from this file's defaults: model='tiny'," in log_text
    assert "flags overriding the checkpoint: none" in log_text
    with pytest.raises(SystemExit) as e:
        tg.main(["--resume", f"--log_dir={new}", "--max_steps=6", "--tokenizer=gpt2"])
    assert "flags overriding the checkpoint: max_steps=6 (was 4), tokenizer='gpt2' (was " in \
        (new / "log.txt").read_text()
    assert "the checkpoint was trained with tokenizer" in str(e.value) and "--tokenizer=gpt2 is tiktoken:gpt2" in str(e.value)


def test_hellaswag_is_skipped_without_data_and_bad_data_is_one_line(corpus, tmp_path, capsys):
    log_dir = str(tmp_path / "log")
    tg.main(tiny_run(corpus, f"--log_dir={log_dir}", "--max_steps=1", "--hellaswag=true",
                     f"--hellaswag_path={tmp_path / 'absent.jsonl'}"))
    assert f"HellaSwag skipped: {tmp_path / 'absent.jsonl'} not found" in capsys.readouterr().out
    (tmp_path / "bad.jsonl").write_text('{"ctx": "x", "endings": ["a"], "label": 0}\n')
    with pytest.raises(SystemExit) as e:
        tg.main(tiny_run(corpus, f"--log_dir={tmp_path / 'bad'}", "--max_steps=1", "--hellaswag=true",
                         f"--hellaswag_path={tmp_path / 'bad.jsonl'}"))
    assert "bad.jsonl:1" in str(e.value) and "\n" not in str(e.value)
    long = {"ind": 7, "ctx": "A man", "endings": ["walks " * 100, "runs", "sits", "waits"], "label": 0}
    (tmp_path / "long.jsonl").write_text(json.dumps(long) + "\n")
    with pytest.raises(SystemExit) as e:  # found when loading, alike on every rank: no DDP rank waits forever
        tg.main(tiny_run(corpus, f"--log_dir={tmp_path / 'long'}", "--max_steps=1", "--hellaswag=true",
                         f"--hellaswag_path={tmp_path / 'long.jsonl'}"))
    assert "long.jsonl: example ind=7: an ending of" in str(e.value) and "context of 64 tokens" in str(e.value)


def test_mixed_precision_paths(corpus, tmp_path):
    """bf16 autocast, and fp16 with a GradScaler whose state goes into the checkpoint (CPU autocast
    runs the same code path the GPUs take)."""
    for dtype in ("bfloat16", "float16"):
        log_dir = str(tmp_path / dtype)
        tg.main(tiny_run(corpus, f"--log_dir={log_dir}", "--max_steps=3", "--stop_step=2", f"--dtype={dtype}"))
        tg.main([f"--log_dir={log_dir}", "--resume"])
        losses = train_losses(log_dir)
        assert sorted(losses) == [0, 1, 2] and all(math.isfinite(v) for v in losses.values())
        assert abs(losses[0] - math.log(320)) < 0.3  # close to the float32 value
        scaler = torch.load(os.path.join(log_dir, "ckpt_000003.pt"), weights_only=True)["scaler"]
        assert (scaler is None) == (dtype == "bfloat16")
        if scaler is not None:
            assert scaler["scale"] > 0 and scaler["_growth_tracker"] == 3


def test_trains_on_the_shards_fineweb_py_writes(corpus, tmp_path):
    """The format is implemented twice (fineweb.py writes, this trainer reads): they must agree."""
    import fineweb
    assert tg.TrainConfig().data_dir == fineweb.default_out_dir("fineweb-edu")
    docs = grammar_documents(400, seed=1)
    os.makedirs(tmp_path / "txt")
    for i in range(40):  # one document per .txt file
        (tmp_path / "txt" / f"doc{i:02d}.txt").write_text("\n".join(docs[i * 10:(i + 1) * 10]))
    subprocess.run([sys.executable, os.path.join(HERE, "fineweb.py"), "--source", str(tmp_path / "txt"),
                    "--tokenizer", corpus.tokenizer_path, "--out", str(tmp_path / "shards"), "--workers", "0",
                    "--quiet", "--val-fraction", "0.2", "--shard-tokens", "5000"], check=True, capture_output=True)
    out = cli(*tiny_run(corpus, "--max_steps=3"), f"--data_dir={tmp_path / 'shards'}", f"--log_dir={tmp_path / 'log'}").stdout
    assert "bits/byte" in out and os.path.exists(tmp_path / "log" / "ckpt_000003.pt")


def test_short_run_learns_far_below_unigram_and_samples(corpus, tmp_path, capsys):
    log_dir = str(tmp_path / "log")
    tg.main(["--model=tiny", f"--data_dir={corpus.data_dir}", f"--tokenizer={corpus.tokenizer_path}",
             f"--log_dir={log_dir}", "--micro_batch_size=8", "--seq_len=64", "--total_batch_size=512",
             "--max_lr=1e-2", "--warmup_steps=10", "--max_steps=150", "--eval_interval=75", "--val_tokens=2048",
             "--sample_interval=150", "--num_samples=2", "--sample_tokens=16", "--hellaswag=false", "--device=cpu"])
    records = [json.loads(line) for line in open(os.path.join(log_dir, "metrics.jsonl"))]
    val = [r for r in records if r["kind"] == "val"]
    assert val[0]["step"] == 0 and val[0]["loss"] == pytest.approx(math.log(320), abs=0.2)  # untrained: uniform
    final = val[-1]
    assert final["step"] == 150
    # The unigram baseline knows only token frequencies; the grammar makes the next token far more predictable.
    assert final["loss"] < 0.5 * corpus.unigram_entropy, (final["loss"], corpus.unigram_entropy)
    assert final["bits_per_byte"] == pytest.approx(final["loss"] / math.log(2) / corpus.bytes_per_token)
    out = capsys.readouterr().out
    samples = [r["text"] for r in records if r["kind"] == "sample"]
    assert len(samples) == 2 and all(s.startswith("Hello, I'm a language model,") for s in samples)
    assert all(len(s) > len("Hello, I'm a language model,") for s in samples)
    assert "sample 0: " in out and "tok/s" in out and "bits/byte" in out
    log_text = open(os.path.join(log_dir, "log.txt")).read()
    assert "val loss" in log_text and "sample 1: " in log_text
    # the finished model is also exported in Hugging Face format, with the same weights
    trained, _ = tg.GPT.from_checkpoint(log_dir)
    exported = tg.GPT.from_pretrained(os.path.join(log_dir, "hf"))
    idx = torch.randint(0, 320, (1, 64))
    with torch.no_grad():
        assert torch.equal(trained(idx)[0], exported(idx)[0])
    # with its tokenizer: transformers' AutoTokenizer reads hf/ and gives our ids
    from transformers import AutoTokenizer
    text = "the old man follows a small bird. A dog likes the river."
    assert AutoTokenizer.from_pretrained(os.path.join(log_dir, "hf")).encode(text) == \
        tg.bpe.load_tokenizer(corpus.tokenizer_path).encode_ordinary(text)
