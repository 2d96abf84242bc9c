r"""Frozen encoder (feature extraction) versus full fine-tuning: trains both, then reports.

  python -m experiments.compare --model_dir=runs/frozen_vs_finetuned \
      --config=configs/minilm_imdb.py --config.data.path=aclImdb_v1.tar.gz

Runs `python -m trainer.main` twice, one after the other, with the same flags:

  <model_dir>/frozen     --config.model.freeze_encoder=true, plus the head and
                         learning rate of --frozen_config (model.head_hidden_size,
                         train.learning_rate; default configs/minilm_imdb_frozen.py,
                         e.g. --frozen_config.model.head_hidden_size=128)
  <model_dir>/finetuned  --config.model.freeze_encoder=false, the config as given

Every flag that is not one of this program's goes to both runs unchanged
(--config, --config.<key>=<value>, --strategy, --data_dir, ...), so both
start from the same pretrained weights (or, for a random encoder, the same
seeded initialisation), see the same data split and batches, and differ only
in what is trained. --config.train.learning_rate and
--config.model.head_hidden_size apply to the fine-tuned run only.

Then writes the report of both runs to <model_dir>/report/ (see experiments.report)
and logs one line comparing them on the test split (validation when a run has no
test split), by the main metric of the task type (config task.type):

  binary      accuracy (and ROC-AUC); the change in points of accuracy
  multiclass  accuracy (and macro-F1); the change in points, higher is better
  multilabel  micro-F1 (and macro-F1); the change in points, higher is better
  regression  MAE (and Pearson's r); the change in MAE, lower is better, so a
              negative change means fine-tuning helped

Exit status: 0, or that of the run that failed (2: bad flag, config or data;
3: diverged; 143: preempted). After a preemption (SIGTERM, forwarded to the
running trainer, which checkpoints), rerun the same command: trainer.main
resumes from its checkpoints, and a run that already finished with the same
flags is not started again.
"""

import json
import os
import re
import signal
import subprocess
import sys

from absl import app, flags, logging
from ml_collections import config_flags
import tensorflow as tf

from experiments import report
from trainer.errors import EXIT_RETRYABLE as EXIT_PREEMPTED

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

flags.DEFINE_string(
    "model_dir",
    "runs/frozen_vs_finetuned",
    "Parent directory: the runs go to frozen/ and finetuned/, the report to report/.",
)
config_flags.DEFINE_config_file(
    "frozen_config",
    os.path.join(_REPO, "configs", "minilm_imdb_frozen.py"),
    "The frozen run's head and learning rate: its model.head_hidden_size and train.learning_rate are "
    "applied over the shared config (override them with --frozen_config.<key>=<value>).",
)

FLAGS = flags.FLAGS

RUNS = ("frozen", "finetuned")
REPORT_DIR = "report"
# Written into a run's directory once it finished; holds the flags it ran with.
DONE_FILE = "compare_done.json"
# Flags this program sets for each run itself.
_RESERVED_FLAGS = ("mode", "config.model.freeze_encoder")
# Values the frozen run takes from this program's flags instead of the pass-through ones.
_FROZEN_OVERRIDES = ("config.train.learning_rate", "config.model.head_hidden_size")
# An absl log line: severity, date, time, thread, file:line] message.
_ABSL_LINE = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ [^\]]*\] ?(.*)$")
_LEVELS = {"I": logging.INFO, "W": logging.WARNING, "E": logging.ERROR, "F": logging.ERROR}


class CompareError(ValueError):
    """Bad flags for this program; the message says which."""


class RunFailedError(RuntimeError):
    def __init__(self, name: str, status: int):
        super().__init__(name, status)
        self.name, self.status = name, status


# ----- pass-through flags -----


def _flag_name(token: str) -> str | None:
    """`--a.b=c` -> `a.b`; None for a token that is not a flag."""
    if not token.startswith("-") or token in ("-", "--"):
        return None
    return token.lstrip("-").split("=", 1)[0]


def _takes_next(args: list[str], index: int) -> bool:
    """Whether the flag at `index` is written `--name value` (its value is the next token)."""
    return "=" not in args[index] and index + 1 < len(args) and _flag_name(args[index + 1]) is None


def flag_value(args: list[str], name: str) -> str | None:
    """The last value given for `--name` in `args` (absl's rule: the last one wins)."""
    value = None
    for index, token in enumerate(args):
        if _flag_name(token) == name:
            if "=" in token:
                value = token.split("=", 1)[1]
            elif _takes_next(args, index):
                value = args[index + 1]
    return value


def without_flags(args: list[str], names: tuple[str, ...]) -> list[str]:
    """`args` without every occurrence of the flags `names` (and their values)."""
    kept, skip = [], False
    for index, token in enumerate(args):
        if skip:
            skip = False
            continue
        if _flag_name(token) in names:
            skip = _takes_next(args, index)
            continue
        kept.append(token)
    return kept


def check_pass_through(args: list[str]) -> None:
    """Refuses flags that would undo what tells the two runs apart."""
    for token in args:
        name = _flag_name(token)
        if name is None:
            continue
        # absl spells a false boolean --noname.
        if name in _RESERVED_FLAGS or (name.startswith("no") and name[2:] in _RESERVED_FLAGS):
            raise CompareError(f"{token}: experiments.compare sets --{name.removeprefix('no')} for each run itself.")


def run_flags(
    name: str, pass_through: list[str], model_dir: str, frozen_head_hidden_size: int, frozen_learning_rate: float
) -> list[str]:
    """trainer.main's flags for run `name` (frozen or finetuned)."""
    run_dir = os.path.join(model_dir, name)
    if name == "frozen":
        return [
            *without_flags(pass_through, _FROZEN_OVERRIDES),
            f"--model_dir={run_dir}",
            "--config.model.freeze_encoder=true",
            f"--config.model.head_hidden_size={frozen_head_hidden_size}",
            f"--config.train.learning_rate={frozen_learning_rate!r}",
        ]
    # Explicit, so a --config that freezes the encoder cannot make both runs frozen.
    return [*pass_through, f"--model_dir={run_dir}", "--config.model.freeze_encoder=false"]


def is_chief(pass_through: list[str]) -> bool:
    """Whether this process is the chief of a multi-worker job (true without one).

    Only the chief's run directories hold metrics and events, so only it reports.
    """
    task_index = flag_value(pass_through, "task_index")
    if task_index is not None:
        return task_index.strip() == "0"
    tf_config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    task, cluster = tf_config.get("task") or {}, tf_config.get("cluster") or {}
    if not task or task.get("type") == "chief":
        return True
    return task.get("type") == "worker" and int(task.get("index", 0)) == 0 and "chief" not in cluster


# ----- running trainer.main -----


class _Children:
    """The running trainer; SIGTERM to this program is forwarded to it, so it checkpoints and exits 143."""

    def __init__(self):
        self.process: subprocess.Popen | None = None
        self.terminated = False

    def forward(self, signum: int, frame) -> None:
        del frame
        self.terminated = True
        if self.process is not None and self.process.poll() is None:
            logging.warning(
                "Received signal %d: passing it to the running trainer, which checkpoints and exits.", signum
            )
            self.process.send_signal(signum)


_children = _Children()


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # TensorFlow's C++ INFO lines say nothing about the runs.
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    # The same trainer package as this program, wherever it is started from.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_REPO, env.get("PYTHONPATH")) if p)
    return env


def _relog(name: str, line: str) -> None:
    line = line.rstrip()
    if not line:
        return
    match = _ABSL_LINE.match(line)
    if match:
        logging.log(_LEVELS[match.group(1)], "[%s] %s", name, match.group(2))
    else:
        logging.info("[%s] %s", name, line)


def _finished_before(run_dir: str, trainer_flags: list[str]) -> bool:
    path = os.path.join(run_dir, DONE_FILE)
    if not tf.io.gfile.exists(path):
        return False
    with tf.io.gfile.GFile(path) as f:
        return json.load(f).get("trainer_flags") == trainer_flags


def train_run(name: str, trainer_flags: list[str], run_dir: str) -> None:
    """Runs trainer.main to the end, streaming its log; raises RunFailedError."""
    if _finished_before(run_dir, trainer_flags):
        logging.info("The %s run in %s finished before with the same flags: not run again.", name, run_dir)
        return
    if _children.terminated:  # SIGTERM between two runs.
        raise RunFailedError(name, EXIT_PREEMPTED)
    command = [sys.executable, "-m", "trainer.main", *trainer_flags]
    logging.info("Starting the %s run: %s", name, " ".join(command[1:]))
    _children.process = subprocess.Popen(
        command, env=_child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    with _children.process.stdout:
        for line in _children.process.stdout:
            _relog(name, line)
    status = _children.process.wait()
    _children.process = None
    if status != 0:
        # A trainer killed by the forwarded SIGTERM before it handled it: resumable all the same.
        preempted = status in (EXIT_PREEMPTED, -signal.SIGTERM) or (_children.terminated and status < 0)
        raise RunFailedError(name, EXIT_PREEMPTED if preempted else (status if status > 0 else 1))
    if tf.io.gfile.isdir(run_dir):  # Not on a non-chief worker whose model_dir is elsewhere.
        with tf.io.gfile.GFile(os.path.join(run_dir, DONE_FILE), "w") as f:
            json.dump({"trainer_flags": trainer_flags}, f, indent=2)
    if _children.terminated:
        # The signal came after the trainer had finished: stop before the next run.
        raise RunFailedError(name, EXIT_PREEMPTED)


# By task type: (main metric, its name, second metric, its name); metrics.json keys.
SUMMARY_METRICS = {
    "binary": ("accuracy", "accuracy", "auc", "ROC-AUC"),
    "multiclass": ("accuracy", "accuracy", "macro_f1", "macro-F1"),
    "multilabel": ("micro_f1", "micro-F1", "macro_f1", "macro-F1"),
    "regression": ("mae", "MAE", "pearson", "Pearson"),
}


def _metric_text(results: dict, key: str) -> str:
    value = results.get(key)
    return f"{value:.4f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "n/a"


def _summary_line(runs: dict[str, report.Run]) -> str:
    """One line: each run's main metric (and a second one) and the change fine-tuning makes to it."""
    split = "test" if all("test" in run.splits() for run in runs.values()) else "validation"
    task_type = runs["finetuned"].task_type
    key, name, second_key, second_name = SUMMARY_METRICS.get(task_type, SUMMARY_METRICS["binary"])
    parts = [
        f"{run_name} {name} {_metric_text(run.metrics[split], key)} "
        f"({second_name} {_metric_text(run.metrics[split], second_key)})"
        for run_name, run in runs.items()
    ]
    before, after = (runs[run_name].metrics[split].get(key) for run_name in ("frozen", "finetuned"))
    if not all(isinstance(value, (int, float)) for value in (before, after)):
        change = f"no change to report: a run has no {name}"
    elif key in report.LOWER_IS_BETTER:
        change = f"fine-tuning {after - before:+.4f} {name} (lower is better)"
    elif task_type == "binary":
        change = f"fine-tuning {100 * (after - before):+.2f} points"
    else:
        change = f"fine-tuning {100 * (after - before):+.2f} points of {name} (higher is better)"
    return f"Frozen vs fine-tuned on the {split} split: {', '.join(parts)}; {change}."


def compare(pass_through: list[str], model_dir: str) -> str | None:
    """Trains both runs and writes the report (chief only); returns report.md's path."""
    check_pass_through(pass_through)
    frozen = FLAGS.frozen_config
    for name in RUNS:
        trainer_flags = run_flags(
            name, pass_through, model_dir, frozen.model.head_hidden_size, frozen.train.learning_rate
        )
        train_run(name, trainer_flags, os.path.join(model_dir, name))
    if not is_chief(pass_through):
        logging.info("Not the chief: the chief writes the report.")
        return None
    runs = report.load_runs([os.path.join(model_dir, name) for name in RUNS], list(RUNS))
    path = report.write_report(runs, os.path.join(model_dir, REPORT_DIR))
    logging.info("%s Report: %s", _summary_line({run.name: run for run in runs}), path)
    return path


def parse_flags(argv: list[str]) -> list[str]:
    """Parses this program's flags; every other flag is left in argv for trainer.main."""
    try:
        return FLAGS(argv, known_only=True)
    except flags.Error as e:
        sys.stderr.write(f"FATAL Flags parsing error: {e} (--help lists the flags)\n")
        sys.exit(2)


def main(argv: list[str]) -> None:
    tf.get_logger().setLevel("WARNING")
    signal.signal(signal.SIGTERM, _children.forward)
    try:
        compare(argv[1:], FLAGS.model_dir)
    except (CompareError, report.ReportError) as e:
        logging.error("%s", e)
        sys.exit(2)
    except RunFailedError as e:
        if e.status == EXIT_PREEMPTED:
            logging.warning(
                "The %s run was preempted (checkpoint saved). Rerun the same command to resume; "
                "finished runs are not run again.",
                e.name,
            )
        else:
            logging.error("The %s run failed with exit status %d (its log is above).", e.name, e.status)
        sys.exit(e.status)


def cli() -> None:
    """The console script's entry point (setup.py)."""
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    cli()
