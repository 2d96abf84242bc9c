"""MultiWorkerMirroredStrategy on CPU over 127.0.0.1, launched by launch/local_cluster.sh.

Each worker is a real `python -m trainer.main` process with its own TF_CONFIG;
dropout is off so that runs with the same seed and global batch can be
compared weight by weight.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from trainer.training import checkpointing

from conftest import PYTHON, REPO, SMOKE_CONFIG, check_ok, check_refused, run_trainer, subprocess_env
from test_report import check_report, run_module

NO_DROPOUT = (
    "--config.model.bert.dropout_rate=0",
    "--config.model.bert.attention_dropout_rate=0",
    "--config.model.head_dropout_rate=0",
)
TIMEOUT = 300

# Every test here starts a cluster of trainer processes.
pytestmark = pytest.mark.slow


def cluster_command(num_workers: int, model_dir, vocab_path, data_path, *flags: str) -> list[str]:
    return [
        "bash",
        str(REPO / "launch" / "local_cluster.sh"),
        str(num_workers),
        "--grace_seconds",
        "20",
        f"--config={SMOKE_CONFIG}",
        f"--config.model.vocab_path={vocab_path}",
        f"--config.data.path={data_path}",
        f"--model_dir={model_dir}",
        *NO_DROPOUT,
        *flags,
    ]


def cluster_env() -> dict[str, str]:
    env = subprocess_env()
    env["PYTHON"] = sys.executable
    return env


def start_cluster(num_workers, model_dir, vocab_path, data_path, *flags) -> subprocess.Popen:
    return subprocess.Popen(
        cluster_command(num_workers, model_dir, vocab_path, data_path, *flags),
        env=cluster_env(),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def run_cluster(num_workers, model_dir, vocab_path, data_path, *flags) -> subprocess.CompletedProcess:
    return subprocess.run(
        cluster_command(num_workers, model_dir, vocab_path, data_path, *flags),
        env=cluster_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def worker_log(model_dir, index: int) -> str:
    return (model_dir / "worker_logs" / f"worker-{index}.log").read_text()


def latest_step(model_dir) -> int:
    latest = tf.train.latest_checkpoint(model_dir / "checkpoints")
    return int(latest.rsplit("-", 1)[1]) if latest else -1


def model_weights(checkpoint_prefix) -> dict[str, np.ndarray]:
    reader = tf.train.load_checkpoint(str(checkpoint_prefix))
    return {
        name: reader.get_tensor(name)
        for name in reader.get_variable_to_shape_map()
        if name.startswith("model/") and "OPTIMIZER_SLOT" not in name
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(predicate, process: subprocess.Popen, what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert process.poll() is None, f"the cluster exited ({process.returncode}) before {what}"
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_two_workers_end_with_identical_weights_equal_to_a_mirrored_run(tmp_path, vocab_path, imdb_dir):
    flags = ("--config.train.steps=30", "--config.train.eval_every_steps=15", "--config.train.keep_checkpoints=5")
    ring = "--config.distribute.communication=ring"
    # Packs change how the gradients travel, not their sums: the weights still equal the mirrored run's.
    packs = "--config.distribute.bytes_per_pack=4096"
    cluster = run_cluster(2, tmp_path / "cluster", vocab_path, imdb_dir, *flags, ring, packs)
    assert cluster.returncode == 0, cluster.stdout + cluster.stderr + worker_log(tmp_path / "cluster", 0)[-3000:]
    logs = [worker_log(tmp_path / "cluster", i) for i in range(2)]
    assert '"worker": ["127.0.0.1:' in logs[0] and "this is worker 0 (chief); 2 replica(s) in sync" in logs[0]
    assert "ring all-reduce" in logs[0]
    assert "Gradient all-reduce: float32 on the wire, in packs of about 4,096 bytes." in logs[0]
    assert "this is worker 1 (not chief)" in logs[1]
    assert "global batch 8 = 4 per replica x 2 replicas" in logs[0]
    digests = [re.search(r"Weights digest at step 30: (\w+)", log).group(1) for log in logs]
    assert digests[0] == digests[1]

    mirrored = tmp_path / "mirrored"
    check_ok(run_trainer(mirrored, vocab_path, imdb_dir, "--num_cpu_devices=2", *NO_DROPOUT, *flags))
    cluster_weights = model_weights(tmp_path / "cluster" / "checkpoints" / "ckpt-30")
    mirrored_weights = model_weights(mirrored / "checkpoints" / "ckpt-30")
    assert cluster_weights.keys() == mirrored_weights.keys() and len(cluster_weights) > 10
    initial = model_weights(mirrored / "checkpoints" / "ckpt-0")
    for name, value in cluster_weights.items():
        np.testing.assert_allclose(value, mirrored_weights[name], atol=2e-5, rtol=1e-4, err_msg=name)
    assert any(not np.allclose(initial[name], value) for name, value in cluster_weights.items())

    # Only the chief writes results; evaluation saw every example exactly once across workers.
    metrics = json.loads((tmp_path / "cluster" / "metrics.json").read_text())
    assert metrics["validation"]["num_examples"] == 32 and metrics["test"]["num_examples"] == 40
    mirrored_metrics = json.loads((mirrored / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] == pytest.approx(mirrored_metrics["test"]["accuracy"], abs=1e-6)
    assert (tmp_path / "cluster" / "export" / "30" / "saved_model.pb").exists()
    leftovers = [name for name in os.listdir(tmp_path / "cluster") if name.startswith(".tmp-worker")]
    assert not leftovers, "non-chief checkpoint copies must not be written to model_dir"
    assert not os.path.exists(checkpointing._worker_dir(str(tmp_path / "cluster"), 1)), "scratch left behind"

    # The report reads a cluster run as it reads a single-process one.
    report_dir = tmp_path / "report"
    check_ok(
        run_module(
            "experiments.report", f"--runs={tmp_path / 'cluster'}", "--names=cluster", f"--output_dir={report_dir}"
        )
    )
    check_report(report_dir, {"cluster": tmp_path / "cluster"})


def test_each_worker_reads_and_tokenizes_only_its_own_share(tmp_path, vocab_path):
    """Two workers run the trainer's input path (tests/shard_probe.py) and report what they read."""
    env = dict(cluster_env(), LOCAL_CLUSTER_WORKER_CMD=f'exec "$PYTHON" {REPO / "tests" / "shard_probe.py"} "$@"')
    launcher = subprocess.run(
        ["bash", str(REPO / "launch" / "local_cluster.sh"), "2", "--log_dir", str(tmp_path / "logs")]
        + [f"--probe_dir={tmp_path}", f"--vocab_path={vocab_path}"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert launcher.returncode == 0, launcher.stdout + launcher.stderr
    workers = [json.loads((tmp_path / f"worker-{i}.json").read_text()) for i in range(2)]
    # Token counts for bucketing: each worker tokenized one half, and both got every count.
    assert [w["tokenized"] for w in workers] == [[[0, 102]], [[102, 203]]]
    assert workers[0]["lengths"] == workers[1]["lengths"] == workers[0]["expected_lengths"]
    # One plan; each global batch split between the workers, worker 0 taking the first half.
    plan = workers[0]["plan"]
    assert workers[1]["plan"] == plan and len(plan) == 203 // 8
    for step, global_batch in enumerate(plan):
        assert workers[0]["consumed"][step] + workers[1]["consumed"][step] == global_batch
    consumed = [i for w in workers for batch in w["consumed"] for i in batch]
    # Every example at most once; only the last partial global batch (3 examples) is left out.
    assert len(consumed) == len(set(consumed)) == 200 and set(consumed) <= set(range(203))


def test_a_killed_worker_stops_the_job_and_a_restart_resumes_from_the_checkpoint(tmp_path, vocab_path, imdb_dir):
    model_dir = tmp_path / "run"
    flags = (
        "--config.train.steps=400",
        "--config.train.checkpoint_every_steps=20",
        "--config.train.log_every_steps=20",
    )
    launcher = start_cluster(2, model_dir, vocab_path, imdb_dir, *flags)
    pids = {}
    for line in launcher.stdout:
        match = re.search(r"worker (\d) pid (\d+)", line)
        if match:
            pids[int(match.group(1))] = int(match.group(2))
        if len(pids) == 2:
            break
    wait_for(lambda: latest_step(model_dir) >= 20, launcher, "a checkpoint after step 0")
    os.kill(pids[1], signal.SIGKILL)
    output = launcher.communicate(timeout=TIMEOUT)[0]
    assert launcher.returncode != 0, output
    assert "exit 137 (killed by SIGKILL)" in output
    # The survivor loses its peer mid-all-reduce (or is stopped by the launcher): "restart me".
    assert re.search(r"worker 0 .* exit 143 ", output), output
    for pid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    killed_at = latest_step(model_dir)
    assert 20 <= killed_at < 400 and not (model_dir / "metrics.json").exists()

    # 20 more steps show the resume; the run's own 400 would only take longer.
    resumed = run_cluster(2, model_dir, vocab_path, imdb_dir, f"--config.train.steps={killed_at + 20}", *flags[1:])
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    log = worker_log(model_dir, 0)
    assert f"resuming at step {killed_at}." in log and f"Training steps {killed_at}..{killed_at + 20}" in log
    assert json.loads((model_dir / "metrics.json").read_text())["step"] == killed_at + 20


@pytest.mark.parametrize("stopped", ["worker", "chief"])
def test_a_hung_worker_is_caught_within_seconds_and_a_restart_resumes(tmp_path, vocab_path, imdb_dir, stopped):
    """A peer that stops answering without dying (SIGSTOP) after the cluster formed: TensorFlow's
    coordination service misses its heartbeats, and the survivor exits 143 naming it."""
    model_dir = tmp_path / "run"
    flags = (
        "--config.train.steps=600",
        "--config.train.checkpoint_every_steps=20",
        "--config.train.log_every_steps=20",
    )
    launcher = start_cluster(2, model_dir, vocab_path, imdb_dir, *flags)
    pids, addresses = {}, {}
    for line in launcher.stdout:
        match = re.search(r"worker (\d) pid (\d+) (\S+)", line)
        if match:
            pids[int(match.group(1))], addresses[int(match.group(1))] = int(match.group(2)), match.group(3)
        if len(pids) == 2:
            break
    wait_for(lambda: latest_step(model_dir) >= 20, launcher, "a checkpoint after step 0")
    hung, survivor = (1, 0) if stopped == "worker" else (0, 1)
    os.kill(pids[hung], signal.SIGSTOP)
    stopped_at = time.time()
    wait_for(lambda: "Lost contact" in worker_log(model_dir, survivor), launcher, "the survivor to notice", 120)
    detected_after = time.time() - stopped_at
    print("DETECTED", detected_after, flush=True)
    os.kill(pids[hung], signal.SIGKILL)  # Rather than wait out the launcher's grace period for a stopped process.
    output = launcher.communicate(timeout=TIMEOUT)[0]
    assert re.search(rf"worker {survivor} .* exit 143 ", output), output
    job = "worker 1" if stopped == "worker" else "worker 0"
    assert f"Lost contact with peer {job} ({addresses[hung]})" in worker_log(model_dir, survivor)
    assert "Traceback" not in worker_log(model_dir, survivor)
    assert detected_after < 60, detected_after
    for pid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    hung_at = latest_step(model_dir)
    assert 20 <= hung_at < 600 and not (model_dir / "metrics.json").exists()
    if stopped == "worker":
        return  # Resuming is the same for both; the chief case shows it.
    resumed = run_cluster(2, model_dir, vocab_path, imdb_dir, f"--config.train.steps={hung_at + 20}", *flags[1:])
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resuming at step {hung_at}." in worker_log(model_dir, 0)
    assert json.loads((model_dir / "metrics.json").read_text())["step"] == hung_at + 20


def test_sigterm_checkpoints_and_exits_143_then_fewer_workers_resume(tmp_path, vocab_path, imdb_dir):
    model_dir = tmp_path / "run"
    flags = (
        "--config.train.steps=3000",
        "--config.train.checkpoint_every_steps=1000",
        "--config.train.log_every_steps=10",
    )
    launcher = start_cluster(2, model_dir, vocab_path, imdb_dir, *flags)
    wait_for(
        lambda: (model_dir / "worker_logs" / "worker-0.log").exists() and "step 20/3000" in worker_log(model_dir, 0),
        launcher,
        "training to be under way",
    )
    launcher.send_signal(signal.SIGTERM)  # A preemption notice: the launcher passes it to every worker.
    output = launcher.communicate(timeout=TIMEOUT)[0]
    assert launcher.returncode == 143, output
    stopped_at = latest_step(model_dir)
    assert 20 <= stopped_at < 1000, "the preemption checkpoint is not a periodic one"
    for i in range(2):
        assert f"Stopped at step {stopped_at} on request (SIGTERM); checkpoint saved." in worker_log(model_dir, i)

    refused = run_trainer(
        model_dir, vocab_path, imdb_dir, *NO_DROPOUT, *flags, "--config.distribute.allow_replica_count_change=false"
    )
    check_refused(refused, f"ckpt-{stopped_at} was trained with 2 replicas, this job has 1")

    # One replica now: the same global batch of 8, all of it on one worker.
    resumed = check_ok(
        run_trainer(model_dir, vocab_path, imdb_dir, *NO_DROPOUT, "--config.train.steps=" + str(stopped_at + 20))
    )
    assert "with 1 replicas instead of 2: the global batch stays 8 (8 per replica)" in resumed.stderr
    assert f"Training steps {stopped_at}..{stopped_at + 20}" in resumed.stderr


def test_a_worker_that_cannot_reach_its_peer_fails_naming_it(tmp_path, vocab_path, imdb_dir):
    own_port = free_port()
    tf_config = {
        "cluster": {"worker": [f"127.0.0.1:{own_port}", "127.0.0.1:9"]},
        "task": {"type": "worker", "index": 0},
    }
    env = subprocess_env()
    env["TF_CONFIG"] = json.dumps(tf_config)
    start = time.time()
    process = subprocess.run(
        [
            *PYTHON,
            "-m",
            "trainer.main",
            "--strategy=multi_worker_mirrored",
            f"--config={SMOKE_CONFIG}",
            f"--config.model.vocab_path={vocab_path}",
            f"--config.data.path={imdb_dir}",
            f"--model_dir={tmp_path}",
            "--config.distribute.connect_timeout_seconds=5",
        ],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    # The watchdog ends the blocked worker with SIGKILL after writing its message.
    assert process.returncode == -signal.SIGKILL, process.stderr[-3000:]
    assert f"worker 127.0.0.1:{own_port} could not join its cluster within 5 s" in process.stderr
    assert "no connection to 127.0.0.1:9." in process.stderr
    assert time.time() - start < 60
