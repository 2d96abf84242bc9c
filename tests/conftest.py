"""Shared fixtures: a tiny vocabulary, a tiny aclImdb tree, and runs of trainer.main.

Everything is made here, in temporary directories; no test needs the real
IMDb archive or the network.
"""

import dataclasses
import hashlib
import json
import os
import pathlib
import random
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile

import forkserver
import numpy as np
import pytest
import tensorflow as tf

from trainer import experiment
from trainer import strategy as strategy_lib
from trainer.data.input_plan import InputPlan
from trainer.run_dir import RunDirectory
from trainer.tasks import registry as task_registry
from trainer.training import steps
from trainer.training.evaluation import Evaluator
from trainer.training.loop import Trainer

# Two logical CPUs for in-process MirroredStrategy tests; must precede TF device set-up.
strategy_lib.split_cpu(2)

REPO = pathlib.Path(__file__).resolve().parents[1]
SMOKE_CONFIG = str(REPO / "configs" / "smoke.py")

POSITIVE_WORDS = ["good", "great", "wonderful", "excellent", "love", "brilliant", "moving", "fun"]
NEGATIVE_WORDS = ["bad", "awful", "terrible", "boring", "hate", "dull", "weak", "mess"]
NEUTRAL_WORDS = ["the", "a", "movie", "film", "plot", "acting", "was", "is", "this", "it", "and", "story"]
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def write_vocab(path: pathlib.Path) -> pathlib.Path:
    words = POSITIVE_WORDS + NEGATIVE_WORDS + NEUTRAL_WORDS
    pieces = ["##s", "##ly", "##ing", ".", ",", "!", "<", ">", "/", "br"]
    path.write_text("\n".join(SPECIAL_TOKENS + words + pieces) + "\n")
    return path


def make_review(rng: random.Random, positive: bool, length: int = 24) -> str:
    sentiment = POSITIVE_WORDS if positive else NEGATIVE_WORDS
    words = [rng.choice(sentiment if rng.random() < 0.35 else NEUTRAL_WORDS) for _ in range(length)]
    words.insert(length // 2, "<br /><br />")
    return " ".join(words).capitalize() + "."


def write_aclimdb(root: pathlib.Path, per_class: dict[str, int], seed: int = 0) -> pathlib.Path:
    """Writes root/aclImdb/{split}/{pos,neg}/<id>_<rating>.txt like the original archive."""
    rng = random.Random(seed)
    for split_name, count in per_class.items():
        for polarity in ("pos", "neg"):
            folder = root / "aclImdb" / split_name / polarity
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                rating = rng.randint(7, 10) if polarity == "pos" else rng.randint(1, 4)
                (folder / f"{i}_{rating}.txt").write_text(make_review(rng, polarity == "pos"))
    (root / "aclImdb" / "README").write_text("tiny fixture\n")
    return root / "aclImdb"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that reads the shared trained run pays for training it: it is in the slow tier."""
    for item in items:
        if "trained_run" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def vocab_path(tmp_path_factory) -> str:
    return str(write_vocab(tmp_path_factory.mktemp("vocab") / "vocab.txt"))


@pytest.fixture(scope="session")
def imdb_dir(tmp_path_factory) -> pathlib.Path:
    """A tiny aclImdb tree: 80 train and 20 test reviews per class."""
    return write_aclimdb(tmp_path_factory.mktemp("imdb"), {"train": 80, "test": 20})


@pytest.fixture(scope="session")
def imdb_archive(tmp_path_factory, imdb_dir) -> pathlib.Path:
    path = tmp_path_factory.mktemp("archive") / "aclImdb_v1.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        archive.add(imdb_dir, arcname="aclImdb")
    return path


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


# `python`, as a fork of the session's preloaded server where that is the same thing
# (tests/forkserver.py): the process still stands for the run, with its output, signals and status.
FORKSERVER = str(REPO / "tests" / "forkserver.py")
PYTHON = [sys.executable, FORKSERVER]
FAULT_SCRIPT = str(REPO / "tests" / "fault_injection.py")


@pytest.fixture(scope="session", autouse=True)
def xla_compilation_cache(tmp_path_factory):
    """One XLA compilation cache for every process of the session. Each trainer run compiles the
    same small kernels (the fused kernels, the optimizer's update of each variable shape): the first
    run compiles them, the others read them back (about 4 s a run). The cache is keyed on the
    compiled program, so a kernel that differs is compiled afresh."""
    before = os.environ.get("TF_XLA_FLAGS")
    cache = tmp_path_factory.mktemp("xla-cache")
    os.environ["TF_XLA_FLAGS"] = f"{before or ''} --tf_xla_persistent_cache_directory={cache}".strip()
    yield
    if before is None:
        del os.environ["TF_XLA_FLAGS"]
    else:
        os.environ["TF_XLA_FLAGS"] = before


@pytest.fixture(scope="session", autouse=True)
def trainer_forkserver(tmp_path_factory, xla_compilation_cache):
    """Starts the session's fork server; runs exec Python themselves until it listens."""
    # A short directory of its own: a Unix socket's path is limited to 107 bytes.
    socket_path = pathlib.Path(tempfile.mkdtemp(prefix="forkserver-")) / "socket"
    log = tmp_path_factory.mktemp("forkserver") / "server.log"
    with log.open("w") as log_file:
        server = subprocess.Popen(
            [sys.executable, FORKSERVER, "serve", str(socket_path)],
            env=subprocess_env(),
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
        )
    os.environ[forkserver.SOCKET_VARIABLE] = str(socket_path)
    yield
    del os.environ[forkserver.SOCKET_VARIABLE]
    server.terminate()
    server.wait(timeout=60)
    shutil.rmtree(socket_path.parent, ignore_errors=True)


def trainer_command(
    model_dir, vocab_path, data_path, *flags: str, fault: str | None = None, own_process: bool = False
) -> list[str]:
    """trainer.main on the smoke config; with `fault`, under tests/fault_injection.py; with
    `own_process`, in a process of its own, never a fork (for a test of the process itself)."""
    python = [sys.executable] if own_process else PYTHON
    program = [FAULT_SCRIPT, fault] if fault else ["-m", "trainer.main"]
    return [
        *python,
        *program,
        f"--config={SMOKE_CONFIG}",
        f"--config.model.vocab_path={vocab_path}",
        f"--config.data.path={data_path}",
        f"--model_dir={model_dir}",
        *flags,
    ]


def run_trainer(
    model_dir,
    vocab_path,
    data_path,
    *flags: str,
    timeout: float = 300,
    env: dict | None = None,
    fault: str | None = None,
) -> subprocess.CompletedProcess:
    """Runs trainer.main to completion; returns the process with its log in .stderr."""
    return subprocess.run(
        trainer_command(model_dir, vocab_path, data_path, *flags, fault=fault),
        env=env or subprocess_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def check_ok(process: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert process.returncode == 0, f"exit {process.returncode}\n{process.stderr[-4000:]}"
    return process


# An error line of ours: absl's "FATAL Flags parsing error: ..." or a Python absl ERROR record
# (TensorFlow's C++ logs, such as "E0000 00:00:... failed call to cuInit", are not ours).
ERROR_LINE = re.compile(r"^(FATAL |E\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+\.py:\d+\] )")


def check_refused(process: subprocess.CompletedProcess, message: str) -> str:
    """A refusal as documented: exit status 2, one error line matching `message`, no traceback."""
    log = process.stderr
    assert process.returncode == 2, f"exit {process.returncode}\n{log[-3000:]}"
    errors = [line for line in log.splitlines() if ERROR_LINE.match(line)]
    assert len(errors) == 1, errors
    assert re.search(message, errors[0]), errors[0]
    assert "Traceback" not in log, log[-3000:]
    return errors[0]


def snapshot(directory) -> dict[str, str]:
    """Every file under `directory` and a digest of its bytes."""
    root = pathlib.Path(directory)
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


_SERVE_SCRIPT = """
import json, sys
# The serving model must not need this project: make importing it fail.
sys.modules["trainer"] = None
sys.modules["configs"] = None
import tensorflow as tf
import tensorflow_text  # noqa: F401
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
inputs = {name: tf.constant(texts, dtype=tf.string) for name, texts in json.loads(sys.stdin.read()).items()}
outputs = {name: value.numpy().tolist() for name, value in serve(**inputs).items()}
decoded = {name: [v.decode() if isinstance(v, bytes) else v for v in values] for name, values in outputs.items()}
print(json.dumps(decoded))
"""


def serve_outputs_in_fresh_process(export_path, texts: list[str], cwd, text_pairs: list[str] | None = None) -> dict:
    """The serving signature's outputs, from a process that imports only tensorflow and tensorflow_text."""
    env = subprocess_env()
    env.pop("PYTHONPATH")
    env.pop("TF_USE_LEGACY_KERAS", None)  # Set by importing trainer; a serving client has TensorFlow's default.
    inputs = {"text": texts, **({"text_pair": text_pairs} if text_pairs is not None else {})}
    served = subprocess.run(
        [sys.executable, "-c", _SERVE_SCRIPT, str(export_path)],
        input=json.dumps(inputs),
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=180,
    )
    assert served.returncode == 0, served.stderr[-3000:]
    return json.loads(served.stdout.strip().splitlines()[-1])


def serve_in_fresh_process(export_path, texts: list[str], cwd) -> list[float]:
    """Positive-class probabilities of a binary model, from a process without this project."""
    return serve_outputs_in_fresh_process(export_path, texts, cwd)["probability"]


def in_process_outputs(model_dir, texts: list[str], text_pairs: list[str] | None = None) -> dict[str, np.ndarray]:
    """The task's serving outputs from the latest checkpoint, computed here with the project's own model."""
    config = experiment.parse(json.loads((model_dir / "config.json").read_text()))
    task = task_registry.build_task(config)
    task.prepare_labels(None, config.task.labels, str(model_dir))
    model = task.build_model()
    tf.train.Checkpoint(model=model).restore(tf.train.latest_checkpoint(model_dir / "checkpoints")).expect_partial()
    pairs = tf.constant(text_pairs) if text_pairs is not None else None
    outputs = model(task.build_tokenizer()(tf.constant(texts), pairs), training=False)
    return {name: value.numpy() for name, value in task.serving_outputs(outputs).items()}


def in_process_probabilities(model_dir, texts: list[str]):
    """Positive-class probabilities of a binary model, computed here from its latest checkpoint."""
    return in_process_outputs(model_dir, texts)["probability"]


def build_trainer(config, strategy, model_dir, train_size: int = 0) -> Trainer:
    """A Trainer in this process, its model, input plan and evaluator wired as trainer.main wires them."""
    parsed = experiment.parse(config)
    task = task_registry.build_task(parsed)
    with strategy.scope():
        model = task.build_model()
    data, train = parsed.data, parsed.train
    plan = InputPlan(
        strategy, task.build_tokenizer(), task.encode_labels, data.seq_length, data.num_buckets, parsed.seed
    )
    run_dir = RunDirectory(str(model_dir), strategy_lib.is_chief(strategy))
    jit_compile = steps.resolve_jit_compile(train.jit_compile)
    evaluator = Evaluator(task, model, strategy, plan, run_dir, parsed.eval.batch_size, jit_compile)
    steps_per_epoch = train_size // train.batch_size
    return Trainer(train, parsed.distribute, task, model, strategy, plan, run_dir, steps_per_epoch, evaluator)


def read_scalars(log_dir) -> dict[str, dict[int, float]]:
    """TensorBoard scalars in `log_dir`'s event files: {tag: {step: value}}."""
    scalars: dict[str, dict[int, float]] = {}
    for path in sorted(pathlib.Path(log_dir).glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                scalars.setdefault(value.tag, {})[event.step] = float(tf.make_ndarray(value.tensor))
    return scalars


@dataclasses.dataclass(frozen=True)
class Run:
    model_dir: pathlib.Path
    log: str


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, vocab_path, imdb_dir) -> Run:
    """One finished MirroredStrategy run over 2 logical CPUs, shared by the read-only tests."""
    model_dir = tmp_path_factory.mktemp("runs") / "mirrored"
    process = check_ok(
        run_trainer(
            model_dir,
            vocab_path,
            imdb_dir,
            "--strategy=mirrored",
            "--num_cpu_devices=2",
            "--config.train.steps=60",
            "--config.train.eval_every_steps=30",
        )
    )
    return Run(model_dir, process.stderr)
