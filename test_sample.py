"""Tests for sample.py: models from checkpoints and Hugging Face directories, prompts from a flag,
a file or stdin, streamed UTF-8 text, reproducible seeds, <|endoftext|>, one-line errors."""
import dataclasses
import io
import os
import subprocess
import sys

import pytest
import torch

import bpe
import checkpoints
import sample
import train_gpt2 as tg

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny GPT-2-vocabulary model saved as a checkpoint and in Hugging Face format."""
    root = tmp_path_factory.mktemp("sample")
    torch.manual_seed(0)
    model = tg.GPT(tg.GPTConfig(**tg.MODEL_PRESETS["tiny"]))  # GPT-2's 50,257 ids
    ckpt = str(root / "ckpt_000001.pt")
    checkpoints.save_checkpoint(ckpt, {"model": model.state_dict(), "model_config": dataclasses.asdict(model.config),
                                       "config": {"tokenizer": "gpt2"}})
    model.save_pretrained(str(root / "hf"))
    return root, ckpt, model


def run(argv, stdin=""):
    out = io.StringIO()
    old = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        return sample.main(argv, out=out), out.getvalue()
    finally:
        sys.stdin = old


def test_checkpoint_prompt_streams_and_seeds_reproduce(trained):
    root, ckpt, model = trained
    args = ["--checkpoint", str(root), "--prompt", "Hello, I'm a language model,", "--num_samples", "2",
            "--max_new_tokens", "12", "--device", "cpu"]
    samples, text = run(args)
    assert len(samples) == 2 and all(len(s) == 12 for s in samples)
    assert text.startswith("--- sample 1 of 2\nHello, I'm a language model,") and "--- sample 2 of 2\n" in text
    tok = bpe.load_tokenizer("gpt2")
    first = text.split("--- sample 2 of 2\n")[0].removeprefix("--- sample 1 of 2\n")
    assert first == "Hello, I'm a language model," + tok.decode(samples[0]) + "\n"  # exactly the sampled tokens
    assert run(args)[0] == samples                      # same seed, same text
    assert run(args + ["--seed", "7"])[0] != samples    # another seed, other text
    # the tokens are train_gpt2.generate's, one sample after another from one generator
    generator = torch.Generator().manual_seed(42)
    prompt = tok.encode("Hello, I'm a language model,")
    expected = [tg.generate(model, prompt, 1, 12, temperature=0.8, generator=generator)[0][len(prompt):]
                for _ in range(2)]
    assert samples == expected


def test_hf_directory_greedy_and_prompts_from_file_and_stdin(trained, tmp_path):
    root, ckpt, model = trained
    greedy = ["--model", str(root / "hf"), "--temperature", "0", "--max_new_tokens", "5", "--device", "cpu"]
    (tmp_path / "p.txt").write_text("The list type", encoding="utf-8")
    from_file, _ = run(greedy + ["--prompt_file", str(tmp_path / "p.txt")])
    from_stdin, text = run(greedy + ["--prompt_file", "-"], stdin="The list type")
    piped, _ = run(greedy, stdin="The list type")
    assert from_file == from_stdin == piped and text.startswith("The list type")
    ids = bpe.load_tokenizer("gpt2").encode("The list type")
    with torch.no_grad():
        logits, _ = model(torch.tensor([ids]))
    assert from_file[0][0] == logits[0, -1].argmax().item()  # temperature 0: the likeliest token
    nothing, _ = run(greedy)  # no prompt at all: continue from <|endoftext|>
    assert len(nothing[0]) == 5


def test_utf8_split_across_tokens_streams_whole_characters(monkeypatch):
    tok = bpe.load_tokenizer("gpt2")
    text = " naïve 日本語 🙂 done"
    ids = tok.encode_ordinary(text)
    assert any("\ufffd" in tok.decode([i]) for i in ids)  # some tokens hold part of a character
    monkeypatch.setattr(tg, "sample_tokens", lambda *a, **k: iter([[i] for i in ids + [tok.eot_id, 11]]))
    args = sample.parse_args(["--model", "gpt2", "--stop_at_eot"])
    out = io.StringIO()
    new = sample.stream_sample(None, tok, tok.encode("Say:"), args, "cpu", torch.float32, None, out)
    assert out.getvalue() == "Say:" + text + "\n" and new == ids  # stopped at <|endoftext|>


def test_one_line_errors(trained, tmp_path):
    root, ckpt, model = trained
    absent = "mps" if torch.cuda.is_available() else "cuda"
    for argv, message in [
        (["--checkpoint", ckpt, "--device", absent], f"--device={absent}: not a device of this machine"),
        (["--checkpoint", ckpt, "--device", "bogus"], "--device=bogus: not a device of this machine"),
        (["--checkpoint", str(tmp_path / "none.pt")], "checkpoint not found"),
        (["--checkpoint", str(tmp_path)], "no ckpt_*.pt checkpoint"),
        (["--checkpoint", ckpt, "--tokenizer", _small_tokenizer(tmp_path)], "the model was trained on 50257"),
        (["--checkpoint", ckpt, "--prompt_file", str(tmp_path / "missing.txt")], "--prompt_file="),
    ]:
        with pytest.raises(SystemExit) as e:
            run(argv)
        assert str(e.value).startswith("sample.py: error: ") and message in str(e.value), str(e.value)
        assert "\n" not in str(e.value)


def _small_tokenizer(tmp_path):
    tok = bpe.Tokenizer()
    tok.train("a tiny corpus of words and more words " * 20, 300, special_tokens=[bpe.EOT])
    tok.save(str(tmp_path / "small.model"))
    return str(tmp_path / "small.model")


def test_command_line(trained):
    root, ckpt, model = trained
    run_ = subprocess.run([sys.executable, os.path.join(HERE, "sample.py"), "--checkpoint", ckpt, "--prompt", "Hi",
                           "--max_new_tokens", "4", "--device", "cpu"], capture_output=True, text=True, timeout=120)
    assert run_.returncode == 0, run_.stderr
    assert run_.stdout.startswith("Hi") and run_.stdout.endswith("\n")
    help_ = subprocess.run([sys.executable, os.path.join(HERE, "sample.py"), "--help"], capture_output=True, text=True)
    assert help_.returncode == 0 and "--temperature" in help_.stdout and "--stop_at_eot" in help_.stdout
