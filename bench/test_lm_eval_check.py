"""bench/lm_eval_check.py at toy size: lm-eval's acc equals hellaswag.py's, through its Python API and
through the `lm_eval` command line the README shows, with the task YAML --write-task writes.

lm-eval is not in requirements.txt (it pulls in accelerate, peft, evaluate, scikit-learn, ...):
the tests that run it are skipped without it. The task-file and error tests always run."""
import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest
import torch
import yaml

import bpe
import hellaswag_scoring
import hf_gpt2
import train_gpt2
from bench import REPO_ROOT
from bench import lm_eval_check
from bench.hellaswag_speed import synthetic_examples

needs_lm_eval = pytest.mark.skipif(
    importlib.util.find_spec("lm_eval") is None,
    reason='lm-eval is not installed (pip install "lm-eval[hf]"); not in requirements.txt: too heavy')


def write_jsonl(path, examples):
    path.write_text("".join(json.dumps(example) + "\n" for example in examples), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def small_vocabulary(tmp_path_factory, toy_text):
    """A 300-id bpe.py tokenizer: a random model's output layer is small, so lm-eval runs fast."""
    path = tmp_path_factory.mktemp("tok") / "toy.model"
    with open(toy_text, encoding="utf-8") as f:
        bpe.Tokenizer("gpt2").train(f.read(), 300, special_tokens=[bpe.EOT]).save(path)
    return str(path)


def test_write_task_makes_the_yaml_lm_eval_reads(tmp_path, capsys):
    data = write_jsonl(tmp_path / "val.jsonl", synthetic_examples(3))
    path = lm_eval_check.main(["--write-task", str(tmp_path / "tasks"), "--data", data])
    assert path == str(tmp_path / "tasks" / "hellaswag_local.yaml")
    task = yaml.safe_load(open(path, encoding="utf-8"))
    assert task["task"] == "hellaswag_local" and task["output_type"] == "multiple_choice"
    assert task["dataset_kwargs"]["data_files"]["validation"] == os.path.abspath(data)
    assert (task["doc_to_text"], task["doc_to_choice"], task["doc_to_target"]) == ("{{ctx}}", "{{endings}}", "{{label}}")
    assert [m["metric"] for m in task["metric_list"]] == ["acc", "acc_norm"]
    assert f"--include_path {tmp_path / 'tasks'} --tasks hellaswag_local" in capsys.readouterr().out


def test_bad_input_is_a_one_line_error(tmp_path):
    for argv, message in [
        (["--write-task", str(tmp_path)], "--write-task needs --data FILE"),
        (["--write-task", str(tmp_path), "--data", write_jsonl(tmp_path / "bad.jsonl", [{"ctx": "x"}])],
         r"bad.jsonl:1 \(example ind=\?\): 'endings' must be a list of 4 strings"),
        (["--model", str(tmp_path / "absent")], r"absent/config.json: not found"),
        (["--tokenizer", str(tmp_path / "absent.model")], r"not 'gpt2' and not a bpe.py model file"),
    ]:
        with pytest.raises(SystemExit, match=rf"^bench.lm_eval_check: error: [^\n]*{message}[^\n]*$"):
            lm_eval_check.main(argv)
    train_gpt2.GPT(train_gpt2.GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=8)).save_pretrained(str(tmp_path / "hf"))
    with pytest.raises(SystemExit, match=r"hf: no tokenizer files \(hf_gpt2.save_tokenizer writes them\)$"):
        lm_eval_check.main(["--model", str(tmp_path / "hf")])


@needs_lm_eval
def test_lm_eval_acc_equals_hellaswag_acc(small_vocabulary, capsys):
    figures = lm_eval_check.main(["--tokenizer", small_vocabulary, "--examples", "12", "--batch-size", "5"])
    assert figures["examples"] == 12 and figures["cut_examples"] == 0
    assert figures["acc_equal"] and figures["per_token_acc_norm_equal"]
    assert figures["lm_eval_acc"] == figures["hellaswag_acc"]
    assert figures["max_loglik_difference"] < lm_eval_check.SAME_LOGLIK_NATS  # one model, two implementations
    out = capsys.readouterr().out
    assert "acc equal: yes; per-token acc_norm equal: yes" in out
    assert re.search(r"hellaswag.py: acc \d\.\d{4}  acc_norm \d\.\d{4} \(per token\)", out)


@needs_lm_eval
def test_examples_longer_than_the_context_are_reported_apart(tmp_path, small_vocabulary):
    """hellaswag.py cuts the context of all four rows alike, lm-eval each row on its own: the
    log-likelihoods of cut examples differ, and the check says so instead of failing."""
    tok = bpe.load_tokenizer(small_vocabulary)
    torch.manual_seed(0)
    model = train_gpt2.GPT(train_gpt2.GPTConfig(vocab_size=tok.vocab_size, n_layer=1, n_head=1, n_embd=16,
                                                block_size=48))
    model.save_pretrained(str(tmp_path / "hf"), eot_id=tok.eot_id)
    hf_gpt2.save_tokenizer(str(tmp_path / "hf"), tok)
    examples = [{**example, "endings": [" ".join(ending.split()[:3]) for ending in example["endings"]]}
                for example in synthetic_examples(6, seed=2)]  # long contexts, short endings
    examples.append({"ind": 99, "ctx": "A man.", "endings": ["a.", "b.", "c.", "d."], "label": 1})
    lines = []
    figures = lm_eval_check.check(str(tmp_path / "hf"), examples, tok, batch_size=4, log=lines.append)
    assert figures["cut_examples"] == 6  # the synthetic ones; the short one fits
    assert figures["max_loglik_difference"] < lm_eval_check.SAME_LOGLIK_NATS < figures["max_loglik_difference_cut"]
    assert any(line.startswith("  6 examples are longer than the model's 48-token context") for line in lines)


@needs_lm_eval
def test_the_readme_command_line_scores_as_hellaswag_py(tmp_path, small_vocabulary):
    """`lm_eval --model hf --model_args pretrained=DIR --include_path TASKS --tasks hellaswag_local`."""
    examples = synthetic_examples(8, seed=1)
    data = write_jsonl(tmp_path / "val.jsonl", examples)
    tok = bpe.load_tokenizer(small_vocabulary)
    lm_eval_check.export_random_model(str(tmp_path / "hf"), tok, seed=1)
    lm_eval_check.main(["--write-task", str(tmp_path / "tasks"), "--data", data])
    command = lm_eval_check.LM_EVAL_COMMAND.format(task_dir=tmp_path / "tasks").split()
    command[command.index("pretrained=log/hf")] = f"pretrained={tmp_path / 'hf'}"
    lm_eval = os.path.join(os.path.dirname(sys.executable), "lm_eval")
    out = subprocess.run([lm_eval if os.path.exists(lm_eval) else command[0], *command[1:]], cwd=tmp_path,
                         capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    # |hellaswag_local|Yaml   |none  |     0|acc     |↑  | 0.25|±  |0.1637|
    acc = float(re.search(r"\|hellaswag_local\|.*\|acc +\|\S* *\| *([0-9.]+)\|", out.stdout).group(1))
    counts = hellaswag_scoring.evaluate(train_gpt2.GPT.from_pretrained(str(tmp_path / "hf")), examples, tok, "cpu")
    assert acc == pytest.approx(counts["correct"] / len(examples), abs=1e-4)


def test_help():
    out = subprocess.run([sys.executable, "-m", "bench.lm_eval_check", "--help"], cwd=REPO_ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0 and "--write-task" in out.stdout
