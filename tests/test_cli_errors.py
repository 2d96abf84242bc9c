"""Bad input stops trainer.main early with a message naming the flag, file or value."""

import subprocess
import sys

import pytest

from conftest import PYTHON, REPO, check_refused, run_trainer, subprocess_env

CASES = {
    "unknown config key": (["--config.train.batch_sise=3"], r"batch_sise"),
    "wrong value type": (["--config.train.batch_size=lots"], r"batch_size"),
    "seq_length beyond the encoder": (
        ["--config.data.seq_length=128"],
        r"--config.data.seq_length=128 exceeds the encoder's 64 position embeddings",
    ),
    "batch not divisible by replicas": (
        ["--num_cpu_devices=2", "--config.train.batch_size=7"],
        r"--config.train.batch_size=7 is the global batch; it must be divisible by the 2 replicas",
    ),
    "zero learning rate": (["--config.train.learning_rate=0"], r"--config.train.learning_rate=0.0: must be > 0"),
    "unreachable hub handle": (
        [
            "--config.model.encoder=hub",
            "--config.model.hub_encoder=https://hub.invalid/encoder/1",
            "--config.model.hub_preprocessor=https://hub.invalid/preprocess/1",
        ],
        r"Could not load TF Hub model --config.model.hub_(encoder|preprocessor)=https://hub.invalid/.*"
        r"may be unreachable.*=/path/to/dir",
    ),
    "missing local hub directory": (
        [
            "--config.model.encoder=hub",
            "--config.model.hub_encoder=/no/such/encoder",
            "--config.model.hub_preprocessor=/no/such/preprocessor",
        ],
        r"--config.model.hub_(encoder|preprocessor)=/no/such/\w+: no such directory",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_flags_fail_with_a_named_cause(case, tmp_path, vocab_path, imdb_dir):
    flags, message = CASES[case]
    check_refused(run_trainer(tmp_path / "run", vocab_path, imdb_dir, *flags), message)


def test_unknown_key_in_the_default_config_is_named_without_a_traceback(tmp_path):
    # Without --config, ml_collections applies overrides while the flag is defined.
    process = subprocess.run(
        [*PYTHON, "-m", "trainer.main", "--config.train.batch_sise=3", f"--model_dir={tmp_path}"],
        env=subprocess_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    check_refused(process, r"unknown config key 'batch_sise'.*Did you mean \"batch_size\"")


@pytest.mark.parametrize(
    "data_flag,message",
    [
        ("missing", r"--config.data.path=.*missing: no such file or directory"),
        ("wrong_layout", r"--config.data.path=.*wrong_layout: no aclImdb/train/pos/\*\.txt"),
    ],
)
def test_bad_data_path_fails_with_a_named_cause(data_flag, message, tmp_path, vocab_path):
    (tmp_path / "wrong_layout").mkdir()
    (tmp_path / "wrong_layout" / "review.txt").write_text("great")
    process = run_trainer(tmp_path / "run", vocab_path, tmp_path / data_flag)
    check_refused(process, message)


@pytest.mark.slow
def test_the_trainer_starts_without_importing_keras_3():
    # Its models are tf_keras models; Keras 3 (and the matplotlib it pulls in) cost ~2 s of every start.
    env = subprocess_env()
    env.pop("TF_USE_LEGACY_KERAS", None)
    listing = "import sys, trainer.main; print(sorted(m for m in sys.modules if m.split('.')[0] == 'keras'))"
    process = subprocess.run(
        [sys.executable, "-c", listing], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert process.returncode == 0, process.stderr[-3000:]
    assert process.stdout.strip().splitlines()[-1] == "[]"
