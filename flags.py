"""The command line of train_gpt2.py: `--name=value` flags typed from a dataclass, --help written
from the comments beside its fields, and the checks a whole training config must pass.

Every check here fails with a one-line UserError that names the flag.
"""
import dataclasses
import inspect
import math
import re
import types

from errors import UserError

# Flags that take one of a few words (matched case-insensitively).
CHOICES = {"device": ("auto", "cuda", "mps", "cpu"),
           "dtype": ("auto", "bfloat16", "float16", "float32"),
           "compile": ("auto", "true", "false"),
           "recipe": ("gpt2", "modern"),
           "position": ("learned", "rope"),
           "norm": ("layernorm", "rmsnorm"),
           "activation": ("gelu", "relu2")}
MAX_LR = 1e4  # the largest --max_lr accepted (see validate)


def field_help(cls):
    """{field: help text} of dataclass `cls`, from the comment on the field's line or, failing
    that, the comment lines just above it, so --help and the source never disagree."""
    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):
        return {}
    helps, above = {}, []
    for line in lines:
        stripped = line.strip()
        field = re.match(r"(\w+): [^=]+= .*?(?:#\s*(.*))?$", stripped)
        if stripped.startswith("#"):
            above.append(stripped.lstrip("#").strip())
        elif field:
            helps[field.group(1)] = field.group(2) or " ".join(above)
            above = []
        else:
            above = []
    return {name: text for name, text in helps.items() if text}


def format_help(cls, usage, footer=""):
    """--help: one entry per field of `cls` with its default, type and help comment."""
    helps = field_help(cls)
    lines = [usage, "", "Every setting can be given as --name=value (bools: true/false/1/0):", ""]
    for f in dataclasses.fields(cls):
        kind = " or ".join("None" if t is type(None) else t.__name__ for t in _types(f.type))
        lines += [f"  --{f.name}={f.default}  ({kind})", f"        {helps.get(f.name, '')}"]
    return "\n".join(lines + ([footer] if footer else []))


def _types(typ):
    """int -> (int,); int | None -> (int, NoneType)."""
    return typ.__args__ if isinstance(typ, types.UnionType) else (typ,)


def convert(name, text, typ):
    """'--name=text' -> a value of the field's type, or a one-line UserError naming the flag."""
    kinds = _types(typ)
    if type(None) in kinds and text.lower() == "none":
        return None
    typ = kinds[0]
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


def parse_overrides(cls, argv):
    """['--max_lr=1e-3', '--resume'] -> {'max_lr': 0.001, 'resume': True}, typed from `cls`."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
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
        overrides[name] = convert(name, text, fields[name].type)
    return overrides


def _require(ok, message):
    if not ok:
        raise UserError(message)


def validate(tc, model, world_size):
    """Checks that need the whole config, the model shape it asks for (a GPTConfig) and the number
    of processes."""
    for name in ("n_layer", "n_head", "n_embd", "block_size"):
        _require(getattr(model, name) > 0, f"--{name}={getattr(model, name)}: must be positive")
    _require(model.n_embd % model.n_head == 0, f"--n_embd={model.n_embd}: must be divisible by"
             f" n_head={model.n_head} (each head gets an equal slice)")
    _require(0.0 <= model.dropout < 1.0, f"--dropout={model.dropout}: must lie in [0, 1)")
    _require(model.position != "rope" or (model.n_embd // model.n_head) % 2 == 0,
             f"--position=rope: the head size n_embd / n_head = {model.n_embd // model.n_head} must be"
             " even (RoPE turns pairs of coordinates)")
    _require(tc.seq_len <= model.block_size,
             f"--seq_len={tc.seq_len} exceeds model {tc.model}'s block_size {model.block_size}")
    for name in ("micro_batch_size", "seq_len", "max_steps", "eval_interval", "val_tokens",
                 "sample_interval", "checkpoint_interval", "total_batch_size"):
        _require(getattr(tc, name) > 0, f"--{name}={getattr(tc, name)}: must be positive")
    per_micro_step = tc.micro_batch_size * tc.seq_len * world_size
    _require(tc.val_tokens >= per_micro_step, f"--val_tokens={tc.val_tokens}: fewer than one batch of"
             f" micro_batch_size x seq_len x world_size = {per_micro_step} tokens")
    _require(tc.total_batch_size % per_micro_step == 0,
             f"--total_batch_size={tc.total_batch_size} is not divisible by micro_batch_size x seq_len"
             f" x world_size = {tc.micro_batch_size} x {tc.seq_len} x {world_size} = {per_micro_step}")
    # Adam moves every weight by up to ~lr per step, so a rate far above 1 only wrecks the model,
    # and one near float32's limit (3.4e38) overflows inside the optimizer instead of erroring.
    _require(math.isfinite(tc.max_lr) and 0 < tc.max_lr <= MAX_LR,
             f"--max_lr={tc.max_lr}: must be a positive number <= {MAX_LR:g}")
    _require(tc.muon_lr is None or (math.isfinite(tc.muon_lr) and 0 <= tc.muon_lr <= MAX_LR),
             f"--muon_lr={tc.muon_lr}: must be a number in [0, {MAX_LR:g}] (0: AdamW for every parameter)")
    _require(0.0 <= tc.min_lr_ratio <= 1.0, f"--min_lr_ratio={tc.min_lr_ratio}: must lie in [0, 1]")
    for name in ("beta1", "beta2"):
        _require(0.0 <= getattr(tc, name) < 1.0, f"--{name}={getattr(tc, name)}: must lie in [0, 1)")
    _require(math.isfinite(tc.eps) and tc.eps > 0, f"--eps={tc.eps}: must be a positive number")
    for name in ("weight_decay", "grad_clip"):
        value = getattr(tc, name)
        _require(math.isfinite(value) and value >= 0, f"--{name}={value}: must be a number >= 0")
    for name in ("warmup_steps", "num_samples", "sample_tokens"):
        _require(getattr(tc, name) >= 0, f"--{name}={getattr(tc, name)}: must be >= 0")
    _require(0 <= tc.seed < 2**32, f"--seed={tc.seed}: must lie in [0, 2**32)")  # numpy's limit
    _require(tc.stop_step == -1 or tc.stop_step >= 1,
             f"--stop_step={tc.stop_step}: must be a step >= 1, or -1 to run to max_steps")
