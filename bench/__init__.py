"""Benchmarks that print figures, with their tests (the top level keeps the scripts a user runs).

    bench/bpe_speed.py        bpe.py's tokenizer training and encoding speed vs HF tokenizers / tiktoken
    bench/fineweb_speed.py    fineweb.py's tokenizing pipeline vs the common nanoGPT-style script
    bench/hellaswag_speed.py  hellaswag_scoring.evaluate on the CPU, batched vs one example at a time
    bench/gpu.py              GPU throughput of train_gpt2.py's real training step
    bench/speedrun.py         CPU speedrun: val bits/byte on tinyshakespeare in N seconds
    bench/sample_speed.py     sampling with train_gpt2's KV cache vs recomputing the context
    bench/step_speed.py       train_gpt2's step (chunked loss) vs the plain full-logits formulation, CPU
    bench/lm_eval_check.py    lm-evaluation-harness's HellaSwag acc vs hellaswag.py's, same model

Each benchmark runs as a module from the repo root, which puts the root on sys.path so that
`import bpe`, `import train_gpt2` etc. find the real scripts:

    python -m bench.speedrun --steps 300
    python -m bench.bpe_speed --help

Their tests (bench/test_*.py) run with the rest from the repo root: `python -m pytest` (or
`python -m pytest bench`); the root conftest.py (offline tiktoken cache, toy_text) applies here too.
"""
import os

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The shared data dir beside the repo (repo_root/../shared/data), e.g. tinyshakespeare.txt.
SHARED_DATA_DIR = os.path.join(REPO_ROOT, "..", "shared", "data")
TINYSHAKESPEARE = os.path.join(SHARED_DATA_DIR, "tinyshakespeare.txt")
