"""The bad-input count: every refusal case of tests/test_boundary.py against a trainer, with a tally.

    python tests/bad_inputs.py [--repo=DIR]

Trains the tiny run once with the trainer under test (the tree of --repo,
default this one; an older commit checked out with `git worktree add` works),
then runs each bad input against a copy of it and prints one line per case:
its exit status, whether the log holds a traceback, whether the error is one
line, and whether the run directory kept every byte. Ends with the count of
cases that end as documented (exit 2, one error line, no traceback, nothing
changed). Exits 1 if any does not.
"""

import argparse
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from test_boundary import refusal_cases, write_config_files  # noqa: E402

from conftest import ERROR_LINE, snapshot, subprocess_env, write_aclimdb, write_vocab  # noqa: E402


def _command(repo: pathlib.Path, model_dir, vocab, data, flags: list[str]) -> list[str]:
    if flags and flags[0].startswith("--config="):
        return [sys.executable, "-m", "trainer.main", *flags, f"--model_dir={model_dir}"]
    config = (
        f"--config={repo / 'configs' / 'smoke.py'}",
        f"--config.model.vocab_path={vocab}",
        f"--config.data.path={data}",
        f"--model_dir={model_dir}",
        "--strategy=default",
    )
    return [sys.executable, "-m", "trainer.main", *config, *flags]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", default=str(pathlib.Path(__file__).resolve().parents[1]), help="the trainer's tree")
    args = parser.parse_args()
    repo = pathlib.Path(args.repo).resolve()
    env = {**subprocess_env(), "PYTHONPATH": str(repo)}
    work = pathlib.Path(tempfile.mkdtemp(prefix="bad-inputs-"))
    vocab = write_vocab(work / "vocab.txt")
    data = write_aclimdb(work / "imdb", {"train": 80, "test": 20})
    trained = work / "trained"
    command = _command(repo, trained, vocab, data, ["--config.train.steps=60"])
    subprocess.run(command, env=env, cwd=repo, check=True, capture_output=True, timeout=600)
    before = snapshot(trained)
    cases = refusal_cases(write_config_files(work))
    as_documented = 0
    for name, (flags, environ, message) in cases.items():
        model_dir = work / "runs" / name.replace(" ", "_")
        shutil.copytree(trained, model_dir)
        process = subprocess.run(
            _command(repo, model_dir, vocab, data, flags),
            env={**env, **environ},
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=600,
        )
        errors = [line for line in process.stderr.splitlines() if ERROR_LINE.match(line)]
        traceback = "Traceback" in process.stderr
        unchanged = snapshot(model_dir) == before
        documented = (
            process.returncode == 2
            and len(errors) == 1
            and re.search(message, errors[0]) is not None
            and not traceback
            and unchanged
        )
        as_documented += documented
        print(
            f"{'ok ' if documented else 'BAD'} {name}: exit {process.returncode}, "
            f"{'traceback' if traceback else 'no traceback'}, {len(errors)} error line(s), "
            f"run directory {'unchanged' if unchanged else 'CHANGED'}",
            flush=True,
        )
    print(f"{as_documented} of {len(cases)} bad inputs end as documented ({repo}; work dir {work})")
    return 0 if as_documented == len(cases) else 1


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
