"""The tests' fork server (tests/forkserver.py) stands in for `python` without a visible difference:
a forked run gets the client's arguments, directory, environment and files, and the client ends
as the run ends; a run the fork cannot reproduce gets a process of its own."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import time

import forkserver
import pytest

from conftest import PYTHON, subprocess_env

SCRIPT = """
import json, os, signal, sys, time
print(json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd(), "marker": os.environ.get("FORKSERVER_MARKER"),
                  "pid": os.getpid(), "tensorflow_loaded": "tensorflow" in sys.modules}), flush=True)
sys.stderr.write("to stderr\\n")
action = sys.argv[1]
if action.startswith("SIG"):
    os.kill(os.getpid(), getattr(signal, action))
if action == "sleep":
    time.sleep(600)
sys.exit(int(action) if action.isdigit() else 0)
"""


@pytest.fixture(scope="module")
def script(tmp_path_factory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("forkserver") / "probe.py"
    path.write_text(SCRIPT)
    # The session's server imports TensorFlow before it listens: wait for it, so runs are forks.
    deadline = time.time() + 300
    while True:
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as probe:
            try:
                probe.connect(os.environ[forkserver.SOCKET_VARIABLE])
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.5)
    return path


def run(script, *arguments: str, env: dict | None = None, cwd=None) -> tuple[subprocess.CompletedProcess, dict]:
    env = {**subprocess_env(), "FORKSERVER_MARKER": "seen", **(env or {})}
    process = subprocess.run(
        [*PYTHON, str(script), *arguments], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )
    return process, json.loads(process.stdout.splitlines()[0])


def assert_gone_soon(run_pid: int) -> None:
    """Fails unless the run `run_pid` (reaped by the server) is gone within 30 s."""
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            os.kill(run_pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    pytest.fail(f"the run (pid {run_pid}) outlived its killed client")


def test_a_forked_run_has_the_clients_arguments_directory_environment_files_and_status(script, tmp_path):
    process, seen = run(script, "3", "two words", "\udcff", cwd=tmp_path)
    assert seen["tensorflow_loaded"]  # Imported by the server, before the fork: this run was one.
    assert seen["argv"] == ["3", "two words", "\udcff"]
    assert seen["cwd"] == str(tmp_path) and seen["marker"] == "seen"
    assert process.returncode == 3 and process.stderr == "to stderr\n"


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGKILL])
def test_a_run_killed_by_a_signal_ends_its_client_by_the_same_signal(script, number):
    process, _ = run(script, number.name)
    assert process.returncode == -number


def test_a_sigkill_of_the_client_kills_its_run(script):
    env = {**subprocess_env(), "FORKSERVER_MARKER": "seen"}
    client = subprocess.Popen([*PYTHON, str(script), "sleep"], env=env, stdout=subprocess.PIPE, text=True)
    run_pid = json.loads(client.stdout.readline())["pid"]
    assert run_pid != client.pid
    client.kill()
    client.wait(timeout=60)
    assert_gone_soon(run_pid)


def test_a_client_gone_before_the_servers_reply_takes_its_run_not_the_server(script, tmp_path):
    # A client killed with the server's reply unread resets its connection instead of closing it.
    output = tmp_path / "output"
    request = {
        "arguments": [str(script), "sleep"],
        "environment": {**subprocess_env(), "FORKSERVER_MARKER": "seen"},
        "cwd": str(tmp_path),
    }
    with (
        output.open("w") as out,
        open(os.devnull) as nothing,
        socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as connection,
    ):
        connection.connect(os.environ[forkserver.SOCKET_VARIABLE])
        socket.send_fds(connection, [json.dumps(request).encode()], [nothing.fileno(), out.fileno(), out.fileno()])
        deadline = time.time() + 60
        while not output.read_text().endswith("\n") and time.time() < deadline:
            time.sleep(0.1)
    assert_gone_soon(json.loads(output.read_text().splitlines()[0])["pid"])
    process, seen = run(script, "0")
    assert process.returncode == 0 and seen["tensorflow_loaded"], "the server is gone: the next run was not a fork"


def test_a_variable_read_at_import_gets_a_process_of_its_own(script):
    process = subprocess.Popen(
        [*PYTHON, str(script), "0"],
        env={**subprocess_env(), "TF_CPP_MIN_LOG_LEVEL": "0"},
        stdout=subprocess.PIPE,
        text=True,
    )
    seen = json.loads(process.stdout.readline())
    assert process.wait(timeout=120) == 0
    assert seen["pid"] == process.pid and not seen["tensorflow_loaded"]  # Python exec'd, nothing preloaded.


def test_without_a_server_the_client_is_python(script, tmp_path):
    env = {key: value for key, value in subprocess_env().items() if key != forkserver.SOCKET_VARIABLE}
    process = subprocess.Popen([*PYTHON, str(script), "5"], env=env, stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    seen = json.loads(process.stdout.readline())
    assert process.wait(timeout=120) == 5 and seen["pid"] == process.pid and seen["cwd"] == str(tmp_path)
