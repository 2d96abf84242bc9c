"""Bad flags that take a different path through trainer.main than tests/test_cli_errors.py's:
each stops with exit status 2 and a one-line message, before a model is built.

Unit-level cases of validate() are in tests/test_config.py; data cases in tests/test_bad_data.py.
"""

import json

import pytest

from conftest import check_ok, check_refused, run_trainer

CASES = {
    # ml_collections parses the value and rejects it.
    "float for an int": (["--config.data.seq_length=1e3"], r"--config.data.seq_length=1e3: invalid literal for int"),
    "not a boolean": (["--config.model.freeze_encoder=maybe"], r"--config.model.freeze_encoder=maybe.*Non-boolean"),
    # validate(): a combination of valid values that cannot both take effect.
    "conflicting options": (
        ["--config.train.nan_policy=skip", "--config.train.max_nan_skips=0"],
        r"--config.train.nan_policy=skip with --config.train.max_nan_skips=0 never skips a batch",
    ),
    # The data source: a path that does not fit the source.
    "csv source given a directory": (
        ["--config.data.source=csv"],
        r"--config.data.path=\S+ is a directory, but --config.data.source=csv reads one file",
    ),
    "text flag outside predict mode": (
        ["--text=great film", "--mode=export"],
        r"--text and --input_file are only for --mode=predict",
    ),
    "predict input file is a directory": (
        ["--mode=predict", "--input_file={tmp_path}"],
        r"--input_file=\S+ is a directory",
    ),
    "batch larger than the training set": (
        ["--config.train.batch_size=512", "--config.eval.batch_size=8"],
        r"training examples do not fill one global batch of 512",
    ),
    "test file for an aclImdb source": (
        ["--config.data.test_path=test.csv"],
        r"--config.data.test_path=test.csv: only csv and jsonl sources take a separate test file",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_flags_stop_before_the_model_is_built(case, tmp_path, vocab_path, imdb_dir):
    flags, message = CASES[case]
    flags = [flag.format(tmp_path=tmp_path) for flag in flags]
    process = run_trainer(tmp_path / "run", vocab_path, imdb_dir, "--strategy=default", *flags)
    check_refused(process, message)
    assert "Model: " not in process.stderr  # No model was built.
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_no_validation_split_trains_and_reports_the_test_split_only(tmp_path, vocab_path, imdb_dir):
    process = check_ok(
        run_trainer(tmp_path, vocab_path, imdb_dir, "--config.data.validation_fraction=0", "--config.train.steps=2")
    )
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert "validation" not in metrics and metrics["test"]["num_examples"] == 40
    assert "Traceback" not in process.stderr
