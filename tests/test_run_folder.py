"""A run folder belongs to one run: a second ``train`` into it is refused while the first runs, and a resume
may not silently change what the run is (config.yaml always says what ran)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import yaml

from conftest import BLOCKS, ENV, sets
from sslandmarks.cli import main


def train_args(out: Path, overrides: list[str]) -> list[str]:
    return ["train", "--config", BLOCKS, "--out", str(out), "--quiet", *sets(overrides)]


def test_a_second_run_into_a_busy_folder_is_refused(tmp_path, tiny_overrides, capsys):
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "sslandmarks", *train_args(out, [*tiny_overrides,
                              "train.steps=100000"])], env=ENV, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 900  # a bound for a hung start only: a loaded machine may take minutes
        while not (out / "log.csv").is_file() and first.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert (out / "log.csv").is_file(), f"the first run did not start (exit code {first.poll()})"
        before = (out / "config.yaml").read_text()
        assert main(train_args(out, [*tiny_overrides, "train.steps=7", "train.lr=0.01"])) == 2
        assert "another process is training into this folder" in capsys.readouterr().err
        assert (out / "config.yaml").read_text() == before  # nothing of the second run was written
    finally:
        first.kill()
        first.wait()
    # the kernel dropped the lock with the killed process: the folder can be resumed or reused
    assert main(train_args(tmp_path / "other", [*tiny_overrides, "train.steps=5"])) == 0


def test_resume_refuses_a_changed_config_and_records_a_longer_run(tmp_path, tiny_overrides, capsys):
    out = tmp_path / "run"
    short = [*tiny_overrides, "train.steps=5"]
    assert main(train_args(out, short)) == 0
    (out / "metrics.json").unlink()
    saved = (out / "config.yaml").read_text()
    assert main(train_args(out, [*short, "train.lr=0.5"]) + ["--resume"]) == 2
    err = capsys.readouterr().err
    assert "config differs" in err and "train.lr" in err and "--config" in err
    assert (out / "config.yaml").read_text() == saved and not (out / "metrics.json").exists()
    assert main(train_args(out, [*tiny_overrides, "train.steps=10"]) + ["--resume"]) == 0  # longer: applied
    assert "applying train.steps (5 -> 10)" in capsys.readouterr().err
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["steps"] == 10
    assert (out / "log.csv").read_text().splitlines()[-1].startswith("10,")
