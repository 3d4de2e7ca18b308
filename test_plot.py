"""Tests for plot.py: a real tiny run's metrics (HellaSwag included) drawn into a PNG, a resumed
run's repeated steps, a run still being written, and one-line errors."""
import json
import os
import subprocess
import sys

import pytest
from matplotlib.image import imread

import fineweb
import plot
import run_log
import train_gpt2 as tg

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory):
    """A real 6-step run of the tiny model, with val loss (bits/byte) and HellaSwag every 3 steps."""
    root = tmp_path_factory.mktemp("plot")
    text = " ".join(f"the cat number {i} sees a dog and a ball." for i in range(3000))
    fineweb.write_shards(str(root / "data"), [text], [text[:6000]], "gpt2", "test")
    hellaswag = root / "hellaswag_val.jsonl"
    hellaswag.write_text("".join(json.dumps({"ind": i, "ctx": "the cat sees", "label": i % 4, "endings": [
        " a dog.", " a ball.", " the river.", " a big house."]}) + "\n" for i in range(8)))
    tg.main(["--model=tiny", f"--data_dir={root / 'data'}", f"--log_dir={root / 'log'}", "--micro_batch_size=2",
             "--seq_len=32", "--total_batch_size=64", "--max_steps=6", "--warmup_steps=2", "--eval_interval=3",
             "--val_tokens=64", "--sample_interval=100", "--hellaswag=true", f"--hellaswag_path={hellaswag}",
             "--compile=false", "--device=cpu"])
    return root / "log"


def assert_drawn_png(path):
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    image = imread(path)
    assert image.shape[0] >= 400 and image.shape[1] >= 600
    assert image[..., :3].std() > 0.05  # not a blank canvas: axes, curves and labels were drawn


def test_plots_loss_bits_per_byte_and_hellaswag(log_dir, capsys):
    out = plot.main([str(log_dir)])
    assert out == os.path.join(str(log_dir), "curves.png")
    assert_drawn_png(out)
    assert capsys.readouterr().out.strip() == f"{out}: hellaswag, train, val"
    image = imread(out)
    assert image.shape[0] == 800  # two panels: the HellaSwag one is there
    metrics = run_log.read_metrics(str(log_dir))
    assert list(metrics["hellaswag"]) == [0, 3, 6] and list(metrics["train"]) == list(range(6))
    assert all(r["bits_per_byte"] for r in metrics["val"].values())


def test_resumed_and_unfinished_logs(log_dir, tmp_path):
    lines = (log_dir / "metrics.jsonl").read_text().splitlines()
    # a resumed run repeats steps 4 and 5 (the later lines win), and the run is mid-write
    again = [json.dumps({**json.loads(l), "loss": 1.0}) for l in lines if json.loads(l)["kind"] == "train"
             and json.loads(l)["step"] >= 4]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines + again) + '\n{"step": 6, "kind": "tr')
    metrics = run_log.read_metrics(str(tmp_path))
    assert [r["loss"] for r in metrics["train"].values()][-2:] == [1.0, 1.0]
    assert sorted(metrics["train"]) == list(range(6))
    assert plot.plot_run(str(tmp_path), str(tmp_path / "c.png")) == ["hellaswag", "train", "val"]
    assert_drawn_png(tmp_path / "c.png")
    # without HellaSwag records: one panel
    (tmp_path / "metrics.jsonl").write_text("\n".join(l for l in lines if '"hellaswag"' not in l))
    assert plot.plot_run(str(tmp_path), str(tmp_path / "d.png")) == ["train", "val"]
    assert imread(tmp_path / "d.png").shape[0] == 500


def test_one_line_errors(tmp_path):
    for content, message in [(None, "metrics.jsonl: cannot read it"), ("", "no train or val records"),
                             ('{"kind": "train"}\n{"step": 1, "kind": "val", "loss": 2}\n', "metrics.jsonl:1: not a metrics record")]:
        if content is not None:
            (tmp_path / "metrics.jsonl").write_text(content)
        with pytest.raises(SystemExit) as e:
            plot.main([str(tmp_path)])
        assert str(e.value).startswith("plot.py: error: ") and message in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "curves.png").exists()


def test_command_line(log_dir, tmp_path):
    run = subprocess.run([sys.executable, os.path.join(HERE, "plot.py"), str(log_dir), "--out", str(tmp_path / "x.png")],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert_drawn_png(tmp_path / "x.png")
    assert "--out" in subprocess.run([sys.executable, os.path.join(HERE, "plot.py"), "--help"],
                                     capture_output=True, text=True).stdout
