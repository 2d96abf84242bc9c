"""Fault injection: kills, preemption, NaN losses, concurrent runs, full and read-only disks.

Each case injects its fault at an exact point (tests/fault_injection.py), then
checks what a user would: the restarted run resumes from the last complete
checkpoint, loses at most one checkpoint interval, and finishes; a torn
checkpoint or a half-written export is never taken for a good one.
"""

import contextlib
import json
import os
import pathlib
import re
import signal
import subprocess
import threading

import numpy as np
import pytest
import tensorflow as tf

from trainer.data import batching
from trainer.serving.export import latest_export
from trainer.training import checkpointing
from trainer.training.checkpointing import Checkpoints

from conftest import (
    REPO,
    check_ok,
    check_refused,
    read_scalars,
    run_trainer,
    serve_in_fresh_process,
    subprocess_env,
    trainer_command,
)

INTERVAL = 10
RUN = (
    "--config.train.steps=40",
    f"--config.train.checkpoint_every_steps={INTERVAL}",
    "--config.train.eval_every_steps=20",
    "--config.train.log_every_steps=1",
    "--config.train.keep_checkpoints=10",
)
TIMEOUT = 300


def run_with_fault(fault: str, model_dir, vocab_path, data_path, *flags: str) -> subprocess.CompletedProcess:
    return run_trainer(model_dir, vocab_path, data_path, *flags, fault=fault, timeout=TIMEOUT)


def act_at(
    model_dir, vocab_path, data_path, flags, marker: str, action, own_process: bool = False
) -> tuple[subprocess.Popen, str]:
    """Starts a training run, calls action(process) at its first log line containing `marker`,
    and returns the process (exited, or still running if the action left it so) and its log so far."""
    process = subprocess.Popen(
        trainer_command(model_dir, vocab_path, data_path, *flags, own_process=own_process),
        env=subprocess_env(),
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
    )
    # A run that hangs before (or after) the marker is killed, so the test fails instead of hanging.
    deadline = threading.Timer(TIMEOUT, process.kill)
    deadline.start()
    log = []
    try:
        for line in process.stderr:
            log.append(line)
            if marker in line:
                if action(process) == "leave running":
                    return process, "".join(log)
                break
        log += process.stderr.readlines()
        process.wait(timeout=TIMEOUT)
    finally:
        deadline.cancel()
    assert any(marker in line for line in log), f"never logged {marker!r}: " + "".join(log)[-3000:]
    return process, "".join(log)


def checkpoint_steps(model_dir) -> list[int]:
    state = tf.train.get_checkpoint_state(str(model_dir / "checkpoints"))
    return [int(path.rsplit("-", 1)[1]) for path in state.all_model_checkpoint_paths] if state else []


def last_logged_step(log: str) -> int:
    return max([int(s) for s in re.findall(r"step (\d+)/\d+ ", log)] or [0])


@pytest.mark.slow
@pytest.mark.parametrize(
    "fault",
    ["kill_during_step:25", "kill_before_checkpoint_state:3", "kill_during_eval:1", "kill_during_export"],
)
def test_a_kill_at_any_point_resumes_from_the_last_complete_checkpoint(fault, tmp_path, vocab_path, imdb_dir):
    model_dir = tmp_path / "run"
    killed = run_with_fault(fault, model_dir, vocab_path, imdb_dir, *RUN)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    reached = last_logged_step(killed.stderr)
    latest = checkpoint_steps(model_dir)[-1]
    tf.train.load_checkpoint(str(model_dir / "checkpoints" / f"ckpt-{latest}"))  # Complete and readable.
    assert reached - latest <= INTERVAL, "more than one checkpoint interval lost"
    if fault.startswith("kill_before_checkpoint_state"):
        # The third save (step 20) wrote its data and index, but the state file still names
        # step 10: the unannounced checkpoint is not trusted.
        assert (model_dir / "checkpoints" / "ckpt-20.index").exists() and latest == 10
    if fault == "kill_during_export":
        partial = [name for name in os.listdir(model_dir / "export") if name.startswith(".tmp-")]
        assert partial and latest_export(str(model_dir / "export")) is None

    resumed = check_ok(run_trainer(model_dir, vocab_path, imdb_dir, *RUN))
    if latest < 40:
        assert f"Restored {model_dir / 'checkpoints' / f'ckpt-{latest}'}: resuming at step {latest}." in resumed.stderr
    assert json.loads((model_dir / "metrics.json").read_text())["step"] == 40
    assert os.listdir(model_dir / "export") == ["40"], "an abandoned partial export was left or picked up"
    probabilities = serve_in_fresh_process(model_dir / "export" / "40", ["a great film", "awful"], tmp_path)
    assert all(0 <= p <= 1 for p in probabilities)


@pytest.mark.slow
def test_a_kill_while_an_export_is_replaced_never_leaves_a_partial_version(tmp_path, vocab_path, imdb_dir):
    model_dir, short = tmp_path / "run", ("--config.train.steps=10", "--config.train.checkpoint_every_steps=10")
    check_ok(run_trainer(model_dir, vocab_path, imdb_dir, *short))
    killed = run_with_fault("kill_during_reexport", model_dir, vocab_path, imdb_dir, *short, "--mode=export")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    # The old version is aside and the new one not yet in place: no version is offered at all.
    assert sorted(name.split("-")[1] for name in os.listdir(model_dir / "export")) == ["10", "replaced"]
    assert latest_export(str(model_dir / "export")) is None
    predicted = check_ok(run_trainer(model_dir, vocab_path, imdb_dir, *short, "--mode=predict", "--text=a great film"))
    assert "No usable export in" in predicted.stderr and predicted.stdout.count("\t") == 2
    assert os.listdir(model_dir / "export") == ["10"], "the dead writer's directories were left behind"


def test_only_complete_export_versions_are_offered(tmp_path):
    for version, files in {"3": ["saved_model.pb", "variables/variables.index"], "7": ["saved_model.pb"]}.items():
        for name in files:
            (tmp_path / version / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / version / name).write_bytes(b"")
    (tmp_path / ".tmp-9-1").mkdir()
    assert latest_export(str(tmp_path)) == str(tmp_path / "3")


def test_non_chief_copies_go_to_local_scratch_and_leftovers_are_removed_at_start(tmp_path, monkeypatch):
    """A non-chief writes its throwaway copy outside model_dir; a killed one's copy is removed when that
    worker starts again, and the chief removes the copies older versions kept in model_dir."""
    model_dir = tmp_path / "run"
    for index in (1, 3):
        (model_dir / f".tmp-worker-{index}").mkdir(parents=True)
        (model_dir / f".tmp-worker-{index}" / "ckpt-10.index").write_bytes(b"")
    scratch = pathlib.Path(checkpointing._worker_dir(str(model_dir), 1))
    (scratch / "checkpoints").mkdir(parents=True)
    (scratch / "checkpoints" / "ckpt-10.index").write_bytes(b"")
    checkpoint, step = tf.train.Checkpoint(v=tf.Variable(1.0)), tf.Variable(0, dtype=tf.int64)
    chief = Checkpoints(checkpoint, str(model_dir), 3, step, is_chief=True, worker_id=0, num_workers=2)
    worker = Checkpoints(checkpoint, str(model_dir), 3, step, is_chief=False, worker_id=1, num_workers=2)
    assert len(os.listdir(model_dir)) == 2 and scratch.exists()  # Nothing is removed before training starts.
    chief.remove_leftovers()
    assert os.listdir(model_dir) == [] and scratch.exists()
    worker.remove_leftovers()
    assert not scratch.exists()

    # A save: the worker's copy appears only in its scratch directory and is gone after the save.
    written = []
    original = tf.train.CheckpointManager.save

    def watched_save(manager, *args, **kwargs):
        path = original(manager, *args, **kwargs)
        written.append(path)
        return path

    monkeypatch.setattr(tf.train.CheckpointManager, "save", watched_save)
    worker.save(5)
    assert written and written[0].startswith(str(scratch))
    assert not scratch.exists() and os.listdir(model_dir) == []


@pytest.mark.slow
def test_a_torn_checkpoint_file_is_skipped_for_the_previous_one(tmp_path, vocab_path, imdb_dir):
    model_dir = tmp_path / "run"
    check_ok(run_trainer(model_dir, vocab_path, imdb_dir, *RUN))
    data_file = next((model_dir / "checkpoints").glob("ckpt-40.data-*"))
    data_file.write_bytes(data_file.read_bytes()[: data_file.stat().st_size // 2])  # Torn after the fact.
    resumed = check_ok(run_trainer(model_dir, vocab_path, imdb_dir, *RUN[1:], "--config.train.steps=45"))
    assert "Skipping unreadable checkpoint" in resumed.stderr and "ckpt-40" in resumed.stderr
    assert "resuming at step 30." in resumed.stderr
    assert json.loads((model_dir / "metrics.json").read_text())["step"] == 45


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_143(tmp_path, vocab_path, imdb_dir):
    model_dir = tmp_path / "run"
    flags = (
        "--config.train.steps=5000",
        "--config.train.checkpoint_every_steps=1000",
        "--config.train.log_every_steps=10",
    )
    process, log = act_at(
        model_dir, vocab_path, imdb_dir, flags, "step 30/5000", lambda p: p.send_signal(signal.SIGTERM)
    )
    assert process.returncode == 143, log[-3000:]
    stopped = checkpoint_steps(model_dir)[-1]
    assert 30 <= stopped < 1000 and f"Stopped at step {stopped} on request (SIGTERM)" in log
    resumed = check_ok(run_trainer(model_dir, vocab_path, imdb_dir, *flags[1:], f"--config.train.steps={stopped + 5}"))
    assert f"resuming at step {stopped}." in resumed.stderr


def poisoned_example(step: int) -> int:
    """A training example of the batch at `step` (smoke fixture: 128 train examples, batch 8, seed 42)."""
    plan = batching.train_plan(np.full(128, 32), 8, seed=42, buckets=np.array([32]), start_step=0, end_step=step + 1)
    return int(plan.indices[step][0])


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["float32", "mixed_float16"])
def test_a_nan_loss_stops_at_once_naming_the_step_and_the_last_good_checkpoint(
    precision, tmp_path, vocab_path, imdb_dir
):
    model_dir = tmp_path / "run"
    process = run_with_fault(
        f"nan_label:{poisoned_example(12)}",
        model_dir,
        vocab_path,
        imdb_dir,
        *RUN,
        f"--config.train.precision={precision}",
    )
    assert process.returncode == 3, process.stderr[-3000:]
    assert "Non-finite loss or gradients at step 13; --config.train.nan_policy=stop." in process.stderr
    assert f"The last good checkpoint is {model_dir / 'checkpoints' / 'ckpt-10'}" in process.stderr
    assert checkpoint_steps(model_dir)[-1] == 10, "nothing after the NaN was saved"
    assert "Traceback" not in process.stderr


@pytest.mark.slow
def test_the_skip_policy_rolls_back_and_skips_the_poisoned_batch(tmp_path, vocab_path, imdb_dir):
    model_dir = tmp_path / "run"
    # 15 steps stay inside the first epoch (16 batches), so the poisoned example comes once.
    flags = (*RUN, "--config.train.steps=15", "--config.train.nan_policy=skip", "--config.train.max_nan_skips=1")
    process = run_with_fault(f"nan_label:{poisoned_example(12)}", model_dir, vocab_path, imdb_dir, *flags)
    assert process.returncode == 0, process.stderr[-3000:]
    assert "Non-finite loss or gradients at step 13: restored" in process.stderr
    assert "skipping batch 12 of the plan (1 of 1 skips used)" in process.stderr
    assert json.loads((model_dir / "metrics.json").read_text())["step"] == 15
    losses = read_scalars(model_dir / "train")["loss"]
    assert all(np.isfinite(v) for v in losses.values())

    # With the poisoned example in every epoch, one skip is not enough.
    again = run_with_fault(
        f"nan_label:{poisoned_example(12)}",
        tmp_path / "again",
        vocab_path,
        imdb_dir,
        *RUN,
        "--config.train.nan_policy=skip",
        "--config.train.max_nan_skips=1",
    )
    assert again.returncode == 3
    assert "the 1 skips allowed by --config.train.max_nan_skips are used up" in again.stderr


@pytest.mark.slow
def test_a_collapsing_float16_loss_scale_is_reported_not_looped_on(tmp_path, vocab_path, imdb_dir):
    model_dir = tmp_path / "run"
    process = run_with_fault(
        "scale_loss:1e30", model_dir, vocab_path, imdb_dir, *RUN, "--config.train.precision=mixed_float16"
    )
    assert process.returncode == 3, process.stderr[-3000:]
    # The dynamic loss scale starts at 2**15 and halves at each overflowing step: 1 after 15.
    assert "Loss scale fell to its floor of 1 by step 15: float16 gradients overflow" in process.stderr, process.stderr[
        -3000:
    ]
    assert f"The last good checkpoint is {model_dir / 'checkpoints' / 'ckpt-10'}" in process.stderr
    assert checkpoint_steps(model_dir)[-1] == 10 and "Traceback" not in process.stderr


@pytest.mark.slow
def test_a_second_run_on_the_same_model_dir_is_refused_until_the_first_is_gone(tmp_path, vocab_path, imdb_dir):
    model_dir = tmp_path / "run"
    flags = ("--config.train.steps=5000", "--config.train.checkpoint_every_steps=1000")
    # A process of its own: the refusal must name the pid of the process that holds the lock.
    first, first_log = act_at(
        model_dir, vocab_path, imdb_dir, flags, "Training steps", lambda p: "leave running", own_process=True
    )
    second = run_trainer(model_dir, vocab_path, imdb_dir, *flags)
    check_refused(second, rf"--model_dir={re.escape(str(model_dir))} is in use by pid {first.pid}")
    first.kill()  # A crash: the lock must not outlive it.
    first.wait()
    check_ok(
        run_trainer(
            model_dir, vocab_path, imdb_dir, "--config.train.steps=5", "--config.train.checkpoint_every_steps=1000"
        )
    )


@contextlib.contextmanager
def tmpfs(path, options: str):
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True
    )
    if mounted.returncode:
        pytest.skip(f"this machine cannot mount a tmpfs to stand for a full or read-only disk: {mounted.stderr}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_read_only_model_dir_is_refused_before_training(tmp_path, vocab_path, imdb_dir):
    with tmpfs(tmp_path / "ro", "ro,size=4m") as model_dir:
        process = run_trainer(model_dir, vocab_path, imdb_dir, "--config.train.steps=5")
    check_refused(process, rf"--model_dir={re.escape(str(model_dir))} is not writable: Read-only file system")
    assert "Training steps" not in process.stderr


def test_a_model_dir_without_room_is_refused_before_training(tmp_path, vocab_path, imdb_dir):
    with tmpfs(tmp_path / "tiny", "size=64k") as model_dir:
        process = run_trainer(model_dir, vocab_path, imdb_dir, "--config.train.steps=5")
    check_refused(process, r"has 0 MiB free; checkpoints and the export of this model need about \d+ MiB")
    assert "Training steps" not in process.stderr


@pytest.mark.slow
def test_a_disk_filling_up_mid_run_leaves_no_corrupt_checkpoint(tmp_path, vocab_path, imdb_dir):
    with tmpfs(tmp_path / "disk", "size=8m") as disk:
        model_dir = disk / "run"
        flags = (
            "--config.train.steps=200",
            "--config.train.checkpoint_every_steps=20",
            "--config.train.log_every_steps=5",
        )

        def fill_the_disk(process):  # Another program takes all the space left.
            with open(disk / "filler", "wb") as filler, contextlib.suppress(OSError):
                while True:
                    filler.write(b"\0" * 65536)
                    filler.flush()

        process, log = act_at(model_dir, vocab_path, imdb_dir, flags, "step 25/200", fill_the_disk)
        assert process.returncode == 1, log[-3000:]
        assert re.search(r"Writing the checkpoint of step \d+ to .* failed: .*No space left on device", log), log[
            -3000:
        ]
        assert f"The last complete checkpoint is {model_dir / 'checkpoints' / 'ckpt-20'}" in log
        assert "Traceback" not in log
        (disk / "filler").unlink()
        resumed = check_ok(run_trainer(model_dir, vocab_path, imdb_dir, *flags, "--config.train.keep_checkpoints=1"))
        assert "resuming at step 20." in resumed.stderr
        assert json.loads((model_dir / "metrics.json").read_text())["step"] == 200


@pytest.mark.slow
def test_deterministic_runs_give_bit_identical_losses_and_weights(tmp_path, vocab_path, imdb_dir):
    runs = []
    for name in ("first", "second"):
        model_dir = tmp_path / name
        process = check_ok(
            run_trainer(
                model_dir,
                vocab_path,
                imdb_dir,
                "--deterministic",
                "--config.train.steps=20",
                "--config.train.log_every_steps=1",
                "--num_cpu_devices=2",
            )
        )
        digest = re.search(r"Weights digest at step 20: (\w+)", process.stderr).group(1)
        losses = read_scalars(model_dir / "train")["loss"]
        reader = tf.train.load_checkpoint(str(model_dir / "checkpoints" / "ckpt-20"))
        weights = {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map() if n.startswith("model/")}
        runs.append((digest, losses, weights))
    (digest_a, losses_a, weights_a), (digest_b, losses_b, weights_b) = runs
    assert digest_a == digest_b
    assert losses_a == losses_b and len(losses_a) == 20
    for name, value in weights_a.items():
        np.testing.assert_array_equal(value, weights_b[name], err_msg=name)
