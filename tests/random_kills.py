"""A kill campaign: SIGKILL the tiny training job at random moments until it finishes.

    python tests/random_kills.py --kills=20 --seed=0

Each round starts (or resumes) the run and SIGKILLs it at a uniformly random
moment between the start of training and the end of an uninterrupted run (timed first), so kills land in steps,
evaluations, checkpoint writes and the export alike. After every kill it checks
what RELIABILITY.md promises: the newest checkpoint named by the state file reads
whole, at most one checkpoint interval of logged steps is lost, and no partial
export is visible as a finished one. Then a last run without a kill must finish
at the configured step with a servable export. Prints one line per round and a
summary; exits 1 on the first broken promise.
"""

import argparse
import json
import pathlib
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

import tensorflow as tf

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from trainer.serving.export import latest_export  # noqa: E402

from conftest import REPO, subprocess_env, trainer_command, write_aclimdb, write_vocab  # noqa: E402

STEPS = 200
INTERVAL = 10
FLAGS = (
    f"--config.train.steps={STEPS}",
    f"--config.train.checkpoint_every_steps={INTERVAL}",
    "--config.train.eval_every_steps=50",
    "--config.train.log_every_steps=1",
    "--config.train.keep_checkpoints=2",
)


def newest_checkpoint_step(model_dir: pathlib.Path) -> int:
    path = tf.train.latest_checkpoint(str(model_dir / "checkpoints"))
    if path is None:
        return -1
    reader = tf.train.load_checkpoint(path)
    for name in reader.get_variable_to_shape_map():
        reader.get_tensor(name)  # Fails on a torn file.
    return int(path.rsplit("-", 1)[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20, help="kill rounds before the final run")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = pathlib.Path(tempfile.mkdtemp(prefix="random-kills-"))
    vocab = write_vocab(work / "vocab.txt")
    data = write_aclimdb(work, {"train": 80, "test": 20})
    # An uninterrupted run first: the time from the start of training to its exit bounds the kill
    # delays, so kills land anywhere in training, evaluation, checkpointing and the export.
    calibration, max_delay = run_and_maybe_kill(
        trainer_command(work / "uninterrupted", vocab, data, *FLAGS), work / "uninterrupted.log", None
    )
    if calibration or not finished(work / "uninterrupted"):
        print("the uninterrupted run failed")
        return 1
    print(f"an uninterrupted run trains, evaluates and exports for {max_delay:.1f}s after start-up")
    runs = 0
    lost = []
    while len(lost) < args.kills:
        model_dir = work / f"run-{runs}"
        command = trainer_command(model_dir, vocab, data, *FLAGS)
        delay = rng.uniform(0.0, max_delay)
        log_path = work / f"round-{len(lost)}-{runs}.log"
        returncode, _ = run_and_maybe_kill(command, log_path, delay)
        process = subprocess.CompletedProcess(command, returncode)
        if process.returncode == 0:
            if not finished(model_dir):
                print(f"run {runs} ended without its metrics or export; see {log_path}")
                return 1
            print(f"run {runs} finished after {delay:.1f}s; starting another")
            runs += 1
            continue
        if process.returncode != -signal.SIGKILL:
            print(f"exit {process.returncode}; see {log_path}")
            return 1
        text = log_path.read_text(errors="replace")
        reached = max([int(s) for s in re.findall(r"step (\d+)/\d+ ", text)] or [0])
        checkpoint = newest_checkpoint_step(model_dir)
        exported = latest_export(str(model_dir / "export"))
        lost.append(max(reached - checkpoint, 0))
        print(
            f"kill {len(lost)}: {delay:.2f}s into training, logged step {reached}, newest complete checkpoint "
            f"{checkpoint}, lost {lost[-1]} steps, export {exported or '-'}"
        )
        if lost[-1] > INTERVAL or (exported and not pathlib.Path(exported, "saved_model.pb").exists()):
            print(f"broken promise; see {log_path}")
            return 1
    final = subprocess.run(command, env=subprocess_env(), cwd=REPO, capture_output=True, text=True)
    print(
        f"final run: exit {final.returncode}; {len(lost)} kills over {runs + 1} runs, steps lost per kill: "
        f"max {max(lost)}, mean {sum(lost) / len(lost):.1f} (interval {INTERVAL}); work dir {work}"
    )
    return 0 if final.returncode == 0 and finished(model_dir) else 1


def run_and_maybe_kill(command: list[str], log_path: pathlib.Path, delay: float | None) -> tuple[int, float]:
    """Runs `command`; SIGKILLs it `delay` seconds after training starts (None: never).

    Returns the exit status and the seconds from the start of training to the exit.
    """
    training = threading.Event()
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, env=subprocess_env(), cwd=REPO, stderr=subprocess.PIPE, text=True)

        def copy_log():
            for line in process.stderr:
                log.write(line)
                if "Training steps" in line or "resuming at step" in line:
                    training.set()

        copier = threading.Thread(target=copy_log)
        copier.start()
        while not training.wait(0.01) and process.poll() is None:
            pass
        started = time.time()
        try:
            process.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait()
        copier.join()
    return process.returncode, time.time() - started


def finished(model_dir: pathlib.Path) -> bool:
    """The run reached STEPS and left a servable export."""
    metrics = json.loads((model_dir / "metrics.json").read_text())
    exported = latest_export(str(model_dir / "export"))
    return metrics.get("step") == STEPS and exported is not None and exported.endswith(f"/{STEPS}")


if __name__ == "__main__":
    start = time.time()
    status = main()
    print(f"{time.time() - start:.0f}s")
    sys.exit(status)
