"""Every input at the boundary is checked once: a refused run exits 2 with one line and changes nothing.

The validation entry point (trainer.experiment.parse, the config schema) is
driven across the whole schema by Hypothesis; the command line is driven with
one case per kind of bad input the trainer reads (flags, config files,
TF_CONFIG, vocabulary files, a checkpoint of another model), each against a
copy of a finished run whose files must come out byte for byte unchanged.
"""

from concurrent.futures import ThreadPoolExecutor
import json
import shutil
import subprocess

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
import pytest

from trainer import experiment
from trainer.config import Experiment
from trainer.errors import UserError

from conftest import PYTHON, REPO, check_ok, check_refused, run_trainer, snapshot, subprocess_env

# ----- the schema, every key -----


def _keys(values: dict, prefix: str = "") -> list[str]:
    keys = []
    for name, value in values.items():
        keys += _keys(value, f"{prefix}{name}.") if isinstance(value, dict) else [f"{prefix}{name}"]
    return keys


DEFAULTS = experiment.default_config().to_dict()
KEYS = _keys(DEFAULTS)
ODD_VALUES = st.one_of(
    st.integers(),
    st.integers(min_value=2**62, max_value=2**80),
    st.integers(min_value=-(2**80), max_value=-1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e39, -1e39, 1e-320, float("nan"), float("inf")]),
    st.text(max_size=20),
    st.sampled_from(["", "\udcff\udcfe", "gpt", "auto", "head_tail", "mixed_float16"]),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


@pytest.mark.slow
@settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(changes=st.lists(st.tuples(st.sampled_from([*KEYS, "train.typo", "model.bert.extra", "data"]), ODD_VALUES)))
def test_every_config_is_either_valid_or_a_user_error(changes):
    """Wrong types, huge and negative numbers, NaN/inf, empty and non-UTF-8 strings, unknown keys:
    the outcome is a valid Experiment or the user error (exit 2), never another exception."""
    values = json.loads(json.dumps(DEFAULTS))
    for key, value in changes:
        *sections, name = key.split(".")
        node = values
        for section in sections:
            node = node.setdefault(section, {}) if isinstance(node.get(section), dict) else node
        node[name] = value
    try:
        parsed = experiment.parse(values)
    except UserError as e:
        assert str(e).startswith("--config.") and "\n" not in str(e)
    else:
        assert isinstance(parsed, Experiment)


def test_values_beyond_what_tensorflow_holds_are_named():
    for key, value, message in [
        ("train.steps", 10**21, "--config.train.steps=1000000000000000000000: beyond what a 64-bit integer holds"),
        ("train.learning_rate", 1e39, r"--config.train.learning_rate=1e\+39: beyond what a 32-bit float holds"),
        ("data.text_column", "\udcff", r"--config.data.text_column='\\udcff': not valid UTF-8"),
    ]:
        config = experiment.default_config()
        section, name = key.split(".")
        config[section][name] = value
        with pytest.raises(UserError, match=message):
            experiment.parse(config)


# ----- the command line: refused, one line, nothing written -----


def write_config_files(tmp_path) -> dict[str, str]:
    files = {
        "syntax.py": "def get_config(:\n    pass\n",
        "raises.py": "def get_config():\n    raise RuntimeError('boom')\n",
        "no_get_config.py": "CONFIG = {}\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "empty_vocab.txt").write_text("")
    (tmp_path / "no_specials.txt").write_text("great\nfilm\n")
    (tmp_path / "vocab_dir").mkdir()
    return {name: str(tmp_path / name) for name in [*files, "empty_vocab.txt", "no_specials.txt", "vocab_dir"]}


def _tf_config(index: int, addresses=("127.0.0.1:2222", "127.0.0.1:2223")) -> str:
    return json.dumps({"cluster": {"worker": list(addresses)}, "task": {"type": "worker", "index": index}})


MULTI = "--strategy=multi_worker_mirrored"


def refusal_cases(files: dict[str, str]) -> dict[str, tuple[list[str], dict[str, str], str]]:
    """name -> (trainer flags, environment, the message of its one error line)."""
    return {
        "config syntax error": ([f"--config={files['syntax.py']}"], {}, r"syntax\.py:1: the config file does not load"),
        "config missing": (["--config=/no/such/config.py"], {}, r"--config=/no/such/config\.py: no such file"),
        "get_config raises": ([f"--config={files['raises.py']}"], {}, r"raises\.py:2: .*RuntimeError: boom"),
        "no get_config": ([f"--config={files['no_get_config.py']}"], {}, r"defines no get_config"),
        "int beyond int64": (["--config.train.steps=1000000000000000000000"], {}, r"beyond what a 64-bit integer"),
        "float beyond float32": (["--config.train.learning_rate=1e39"], {}, r"beyond what a 32-bit float"),
        "stray positional argument": (["--mode=predict", "--text=great", "film"], {}, r"unexpected argument.*'film'"),
        "TF_CONFIG not JSON": ([MULTI], {"TF_CONFIG": "{cluster"}, r"TF_CONFIG is not valid JSON"),
        "TF_CONFIG index": ([MULTI], {"TF_CONFIG": _tf_config(2)}, r"TF_CONFIG task index 2 is not an index"),
        "TF_CONFIG address": ([MULTI], {"TF_CONFIG": _tf_config(0, ["localhost"])}, r"'localhost' is not a host:port"),
        "worker_hosts": ([MULTI, "--worker_hosts=a:1,b", "--task_index=0"], {}, r"--worker_hosts: 'b' is not a host"),
        "vocabulary is a directory": (
            [f"--config.model.vocab_path={files['vocab_dir']}"],
            {},
            r"--config.model.vocab_path: vocabulary .*vocab_dir is a directory",
        ),
        "empty vocabulary": (
            [f"--config.model.vocab_path={files['empty_vocab.txt']}"],
            {},
            r"empty_vocab\.txt is empty",
        ),
        "vocabulary without [CLS]": (
            [f"--config.model.vocab_path={files['no_specials.txt']}"],
            {},
            r"no_specials\.txt lacks the special token\(s\) \['\[CLS\]'",
        ),
        "checkpoint of another model": (
            ["--config.model.bert.hidden_size=64"],
            {},
            r"holds .*ckpt-60, which does not fit the configured model.*config\.json there",
        ),
        "seq_length beyond positions": (["--config.data.seq_length=65"], {}, r"exceeds the encoder's 64 position"),
        "missing data": (["--config.data.path=/no/such/data"], {}, r"--config.data.path=/no/such/data: no such file"),
        "missing hub model": (
            [
                "--config.model.encoder=hub",
                "--config.model.hub_encoder=/no/enc",
                "--config.model.hub_preprocessor=/no/p",
            ],
            {},
            r"--config.model.hub_encoder=/no/enc: no such directory",
        ),
    }


def test_every_refusal_exits_2_with_one_line_and_leaves_the_run_untouched(trained_run, tmp_path, vocab_path, imdb_dir):
    files = write_config_files(tmp_path)
    cases = refusal_cases(files)
    before = snapshot(trained_run.model_dir)

    def refuse(name: str):
        flags, environ, _ = cases[name]
        model_dir = tmp_path / "runs" / name.replace(" ", "_")
        shutil.copytree(trained_run.model_dir, model_dir)
        env = {**subprocess_env(), **environ}
        if flags[0].startswith("--config="):  # A config file of its own, as a user would give it.
            command = [*PYTHON, "-m", "trainer.main", *flags, f"--model_dir={model_dir}"]
            process = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
        else:
            process = run_trainer(model_dir, vocab_path, imdb_dir, "--strategy=default", *flags, env=env)
        return model_dir, process

    # Two at a time: each case is a process of its own, mostly TensorFlow's import.
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip(cases, pool.map(refuse, cases)))
    failures = []
    for name, (model_dir, process) in results.items():
        try:
            check_refused(process, cases[name][2])
            assert snapshot(model_dir) == before, "the run directory changed"
        except AssertionError as e:
            failures.append(f"{name}: {str(e)[:600]}")
    assert not failures, "\n".join(failures)


# ----- predict with exports that do not load -----


def test_predict_skips_exports_that_do_not_load_for_an_older_one_or_the_checkpoint(trained_run, tmp_path, vocab_path):
    model_dir = tmp_path / "run"
    shutil.copytree(trained_run.model_dir, model_dir)
    good = model_dir / "export" / "60"
    newer = model_dir / "export" / "70"
    shutil.copytree(good, newer)
    (newer / "saved_model.pb").write_bytes(b"\x08\x01not a SavedModel")

    def predict(*flags):
        return run_trainer(model_dir, vocab_path, "unused", "--mode=predict", "--text=A great film.", *flags)

    served = check_ok(predict())
    assert "Skipping the export" in served.stderr and "export/70" in served.stderr
    assert served.stdout.splitlines()[-1].endswith("\tA great film.")

    (good / "saved_model.pb").write_bytes(b"torn")
    from_checkpoint = check_ok(predict())
    assert "No usable export" in from_checkpoint.stderr and "Exported serving model" in from_checkpoint.stderr
    assert from_checkpoint.stdout == served.stdout  # The same weights, exported again.

    (good / "saved_model.pb").write_bytes(b"torn")
    shutil.rmtree(model_dir / "checkpoints")
    check_refused(predict(), r"nothing to predict with: the exports export/70, export/60 do not load and no checkpoint")
