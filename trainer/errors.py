"""Errors by what a launcher should do about them; each class carries its process exit status.

Every error the trainer raises on purpose derives from one of four kinds, so
`trainer.main` maps errors to exit statuses in one place:

| kind | status | meaning for a launcher |
| --- | --- | --- |
| `UserError` | 2 | a bad flag, config, data file or model_dir: fix the input, do not retry |
| `DivergedError` | 3 | the loss became NaN/Inf: change the recipe, do not retry as is |
| `WriteError` | 1 | a checkpoint or export could not be written: look at the log, then rerun |
| `ReadError` | 1 | a data shard turned out unreadable mid-run (after a checkpoint): fix it, then rerun |
| `RetryableError` | 143 | stopped early on purpose (SIGTERM after a checkpoint, a lost peer): restart |

143 is 128 + SIGTERM, which Kubeflow's `restartPolicy: ExitCode` retries.
"""

EXIT_WRITE_FAILED = 1
EXIT_USER_ERROR = 2
EXIT_DIVERGED = 3
EXIT_RETRYABLE = 143


class TrainerError(Exception):
    """Base of the errors the trainer raises on purpose; the message says what to do."""

    exit_status = EXIT_WRITE_FAILED


class UserError(TrainerError, ValueError):
    """A flag, config value, data file or model_dir is wrong; the message names it."""

    exit_status = EXIT_USER_ERROR


class DivergedError(TrainerError):
    """Training diverged (NaN/Inf loss or a collapsed loss scale)."""

    exit_status = EXIT_DIVERGED


class WriteError(TrainerError):
    """Something could not be written (disk full, permissions); the message names what is still good."""

    exit_status = EXIT_WRITE_FAILED


class RetryableError(TrainerError):
    """The run stopped early on purpose and resumes when restarted."""

    exit_status = EXIT_RETRYABLE


class ReadError(TrainerError):
    """A record of a streamed source could not be read mid-run; the message names the shard and what was
    saved."""

    exit_status = EXIT_WRITE_FAILED
