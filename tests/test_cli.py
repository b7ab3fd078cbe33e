"""The command line: its version, user errors as one line and exit status 1 (a traceback only with
--debug), --log before or after the command, and training log lines that carry the metrics' loss."""

from __future__ import annotations

import re
from importlib.metadata import version

import pandas as pd
import pytest
import yaml

from itlin.cli import main
from itlin.data import DataError


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"itlin {version('itlin')}"


@pytest.mark.parametrize("argv, named", [
    (["prepare", "--dataset", "mnist", "--out", "{tmp}/data.npz"], "unknown dataset 'mnist'"),
    (["train", "--config", "{tmp}/missing.yaml", "--out", "{tmp}/run"], "missing.yaml"),
])
def test_user_error_is_one_line_without_traceback(capsys, tmp_path, argv, named):
    argv = [arg.format(tmp=tmp_path) for arg in argv]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and named in err and "--debug" in err, err
    assert "Traceback" not in err
    with pytest.raises((DataError, OSError, ValueError)):  # the error itself, traceback and all
        main([*argv, "--debug"])


def test_invalid_run_config_names_the_key(capsys, tmp_path, run_config):
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run_config(K=0)))
    assert main(["train", "--config", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "run")]) == 1
    assert "K: must be an integer >= 1 or inf" in capsys.readouterr().err


@pytest.mark.parametrize("before", [True, False], ids=["--log before the command", "--log after it"])
def test_log_option_anywhere(tmp_path, before):
    command = ["prepare", "--dataset", "synthetic", "--out", str(tmp_path / "data.npz"), "--option", "n_train=32",
               "--option", "n_test=16", "--option", "image_size=4", "--option", "num_classes=2"]
    log = ["--log", str(tmp_path / "prepare.log")]
    assert main(log + command if before else command + log) == 0
    assert "wrote " in (tmp_path / "prepare.log").read_text()


def test_first_training_log_line_shows_the_initial_loss(tmp_path, run_config):
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run_config(steps=20, eval_every=10, checkpoint_every=20)))
    assert main(["train", "--config", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "run"),
                 "--log", str(tmp_path / "train.log")]) == 0
    logged = re.findall(r"step (\d+)/20 \| train loss \(f_lin\) (\S+)", (tmp_path / "train.log").read_text())
    metrics = pd.read_parquet(tmp_path / "run" / "metrics.parquet")
    train = metrics[(metrics["split"] == "train") & (metrics["evaluator"] == "linear")].set_index("step")["loss"]
    assert [int(step) for step, _ in logged] == [0, 10, 20]
    for step, loss in logged:  # the loss of f_lin on the train subset, as in the metrics; at step 0 of θ₀
        assert float(loss) == pytest.approx(train[int(step)], abs=1e-4) and float(loss) > 0
