"""The command line every entry point shares: --config with its overrides, --data_dir, and exit statuses.

Bad flags, config files that do not load and stray arguments end in one line and
exit status 2 (no traceback); a TrainerError raised by the command ends in its
message and its status (trainer/errors.py).
"""

from collections.abc import Callable
import os
import sys
import traceback

from absl import flags, logging
import ml_collections
from ml_collections import config_flags
import tensorflow as tf

from trainer import errors, experiment
from trainer import strategy as strategy_lib

_DEFAULT_CONFIG = os.path.join(experiment.CONFIGS_DIR, "minilm_imdb.py")
# Python errors that ml_collections raises for a --config.* override it rejects
# (an unknown key, a value of the wrong type); absl would let them through as tracebacks.
_CONFIG_OVERRIDE_ERRORS = (AttributeError, KeyError, TypeError, ValueError, OSError)


def _exit_with_flag_error(error: Exception | str) -> None:
    if isinstance(error, Exception):
        # ml_collections wraps a KeyError for an unknown key in an AttributeError.
        while error.args and isinstance(error.args[0], Exception):
            error = error.args[0]
        unknown_key = isinstance(error, KeyError) and error.args
        # One line: ml_collections puts its "Did you mean" hint for an unknown key on a line of its own.
        error = " ".join((f"unknown config key {error.args[0]}" if unknown_key else str(error)).split())
    sys.stderr.write(f"FATAL Flags parsing error: {error} (--help lists the flags)\n")
    sys.exit(errors.EXIT_USER_ERROR)


def _config_file_error(path: str, error: BaseException) -> str:
    """One line for a config file that does not load: where it failed (file and line) and why."""
    line = getattr(error, "lineno", None) if isinstance(error, SyntaxError) else None
    for frame in traceback.extract_tb(error.__traceback__):
        if os.path.abspath(frame.filename) == os.path.abspath(path):
            line = frame.lineno
    where = f"{path}:{line}" if line else path
    return f"--config={where}: the config file does not load ({type(error).__name__}: {error})."


try:
    config_flags.DEFINE_config_file(
        "config",
        _DEFAULT_CONFIG,
        "Experiment config: a named config (minilm_imdb_long = configs/minilm_imdb_long.py), a config file's path, "
        "or a run's config.json to rerun it. Override any value with --config.<key>=<value>, "
        "e.g. --config.train.batch_size=64. Every key, its default and meaning: trainer/config.py.",
        lock_config=True,
    )
except _CONFIG_OVERRIDE_ERRORS as e:
    # Without --config, ml_collections applies the overrides to the default config right here.
    _exit_with_flag_error(e)
flags.DEFINE_string("data_dir", None, "TFDS data directory (default ~/tensorflow_datasets).")

FLAGS = flags.FLAGS


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with a one-line message and exit status 2 (no traceback) for every bad flag,
    config file or stray argument."""
    # The --config named last on the command line (absl's rule), else the default; names and
    # config.json paths become the file ml_collections loads.
    argv = list(argv)
    config_path = _DEFAULT_CONFIG
    for index, token in enumerate(argv[1:], start=1):
        if token.startswith("--config="):
            config_path = token.partition("=")[2]
            argv[index] = f"--config={experiment.config_file_argument(config_path)}"
        elif token == "--config" and index + 1 < len(argv):
            config_path = argv[index + 1]
            argv[index + 1] = experiment.config_file_argument(config_path)
    if not os.path.isfile(config_path) and not os.path.isfile(experiment.config_file_argument(config_path)):
        _exit_with_flag_error(
            f"--config={config_path}: no such file or named config (a configs/*.py file with get_config(), "
            f"a run's config.json, or one of {', '.join(experiment.named_configs())})."
        )
    try:
        remaining = FLAGS(argv)
        # ml_collections loads a config file without overrides on first use: load it now.
        loaded = FLAGS.config
        if not isinstance(loaded, ml_collections.ConfigDict):
            _exit_with_flag_error(
                f"--config={config_path}: get_config() returned a {type(loaded).__name__}, not a ConfigDict; "
                "start from trainer.experiment.default_config()."
            )
    except flags.Error as e:
        _exit_with_flag_error(e)
    except Exception as e:  # Whatever the config file raised while it loaded (syntax, get_config).
        cause = e.__cause__ or e
        if "has no attribute 'get_config'" in str(cause):
            _exit_with_flag_error(f"--config={config_path}: the file defines no get_config().")
        if isinstance(e, _CONFIG_OVERRIDE_ERRORS) and not isinstance(cause, (SyntaxError, ImportError)):
            _exit_with_flag_error(e)
        _exit_with_flag_error(_config_file_error(config_path, cause))
    if len(remaining) > 1:
        _exit_with_flag_error(
            f"unexpected argument(s) {' '.join(repr(a) for a in remaining[1:])}: every value belongs to a flag "
            "(--name=value). A value with spaces must be quoted, e.g. --text='a great film'."
        )
    return remaining


def run_with_exit_statuses(action: Callable[[], None], strategy: str = "default") -> None:
    """Runs `action`; a TrainerError (or a lost peer) ends the process with its one-line message and status."""
    # TensorFlow's own INFO lines (one per all-reduce set-up) would drown the progress log.
    tf.get_logger().setLevel("WARNING")
    try:
        action()
    except Exception as e:  # The one place errors become exit statuses.
        error = e if isinstance(e, errors.TrainerError) else strategy_lib.as_peer_loss(e, strategy)
        if error is None:
            raise
        if isinstance(error, errors.RetryableError):
            logging.warning("%s Exiting with status %d: restart the job to resume.", error, error.exit_status)
        else:
            logging.error("%s", error)
        if isinstance(error, strategy_lib.PeerLostError):
            # TensorFlow's shutdown of a cluster waits on the lost peer (its coordination service's
            # barrier), which can outlast a launcher's grace period: leave at once. Checkpoints are
            # complete files by now, and the logs are flushed first.
            logging.flush()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(error.exit_status)
        sys.exit(error.exit_status)
