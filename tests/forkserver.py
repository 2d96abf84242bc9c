"""A fork server for the tests' trainer processes: TensorFlow is imported once, each run is a fork.

Most of a tiny trainer run is the import of TensorFlow and the trainer (5-9 s on 2 cores). The
suite starts a couple of hundred of them, so conftest.py starts one server per test session:

    python tests/forkserver.py serve SOCKET

It imports TensorFlow and the trainer's other third-party dependencies, and waits. Each
run is then started as an ordinary command whose process stands for the run:

    python tests/forkserver.py -m trainer.main FLAGS...       (or SCRIPT ARGS...)

That client hands its stdin, stdout, stderr, working directory, environment and arguments to
the server, which forks; the fork runs the module or script as `__main__`, as `python -m` would:
the trainer's own modules are imported there, so their flags are defined and parsed afresh. The
client forwards the signals it receives, and it ends with the run's exit status, or by the run's
signal. A SIGKILL of the client kills the run too: the server watches each client's connection,
kills the run when it drops, and reaps it before it forks the next one (a restarted run never
meets the killed one's lock). What cannot be reproduced this way falls back to exec'ing Python
itself: no server set (the variable below unset or its socket not yet listening), `-c` or other
interpreter options, or an environment that differs from the server's in a variable read while
modules import (TF_*, PYTHON*, ...). A SIGSTOP stops only the client: tests that stop a run
start it in a process of its own.

Test-only, never imported by the product. The client imports only the standard library.
"""

import ast
import contextlib
import json
import os
import pathlib
import re
import selectors
import signal
import socket
import sys

SOCKET_VARIABLE = "TRAINER_TEST_FORKSERVER"
# Read by TensorFlow, the interpreter or the native libraries while modules import: a run that
# changes one of these needs a process of its own. TF_CONFIG is read when a strategy is built.
_READ_AT_IMPORT = re.compile(r"^(TF_(?!CONFIG$)|XLA_|PYTHON|LD_|OMP_|KMP_|MKL|OPENBLAS|CUDA|NVIDIA|TMPDIR$)")
_FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
_MAX_REQUEST = 1 << 20


# ----- the client: the process a test starts -----


def _exec_python(arguments: list[str]) -> None:
    os.execv(sys.executable, [sys.executable, *arguments])


def run_client(arguments: list[str]) -> None:
    """Runs `python ARGUMENTS` as a fork of the server, or execs it when it cannot be a fork."""
    path = os.environ.get(SOCKET_VARIABLE)
    if not path or not arguments or (arguments[0].startswith("-") and arguments[0] != "-m"):
        _exec_python(arguments)
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        connection.connect(path)
        request = {"arguments": arguments, "environment": dict(os.environ), "cwd": os.getcwd()}
        socket.send_fds(connection, [json.dumps(request).encode()], [0, 1, 2])
        reply = connection.recv(64).decode()
    except OSError:  # Not listening yet (still importing), or gone: a process of its own.
        reply = ""
    if not reply.startswith("pid "):
        connection.close()
        _exec_python(arguments)
    run_pid = int(reply.split()[1])
    for number in _FORWARDED_SIGNALS:
        signal.signal(number, lambda received, _frame: os.kill(run_pid, received))
    ended = connection.recv(64).decode()  # "status N", as os.waitpid gives it.
    if not ended.startswith("status "):
        sys.stderr.write(f"forkserver: the server went away while pid {run_pid} ran\n")
        sys.exit(1)
    status = int(ended.split()[1])
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        if number not in (signal.SIGKILL, signal.SIGSTOP):  # The two that keep their default action.
            signal.signal(number, signal.SIG_DFL)
        os.kill(os.getpid(), number)
        sys.exit(128 + number)  # A signal whose default is to be ignored: the shell's status for it.
    sys.exit(os.waitstatus_to_exitcode(status))


# ----- the server -----


def _preload() -> None:
    """Imports the trainer's third-party dependencies, the bulk of its start-up, and no module of its
    own beyond the package: its modules define flags, which read the command line as they are defined."""
    import importlib

    package = pathlib.Path(__file__).resolve().parents[1] / "trainer"
    importlib.import_module("trainer")  # Sets the environment TensorFlow's import reads.
    for source in sorted(package.rglob("*.py")):
        for node in ast.parse(source.read_text()).body:  # Module-level imports only, as a run makes them.
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                if name.partition(".")[0] != "trainer":
                    importlib.import_module(name)


def _become_the_run(request: dict, descriptors: list[int], server_files: list, preloaded_environment: dict) -> None:
    """In the fork: takes on the client's files, directory, environment and arguments, and runs."""
    import runpy

    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for server_file in server_files:  # Closed through their objects, which would close them again.
        server_file.close()
    for target, fd in enumerate(descriptors):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["environment"])
    for name, value in preloaded_environment.items():  # What the imports set, as they would have.
        os.environ.setdefault(name, value)
    arguments = request["arguments"]
    if arguments[0] == "-m":
        sys.path[0] = request["cwd"]
        sys.argv = [arguments[1], *arguments[2:]]
        runpy.run_module(arguments[1], run_name="__main__", alter_sys=True)
    else:
        script = os.path.abspath(arguments[0])
        sys.path[0] = os.path.dirname(script)
        sys.argv = [arguments[0], *arguments[1:]]
        runpy.run_path(script, run_name="__main__")
    raise SystemExit(0)  # Up through the server's frames, never back into its loop.


def _received(connection: socket.socket) -> bytes:
    """A byte from a client, or b"" when it hung up; a client killed before it read the server's
    reply resets the connection instead of closing it."""
    try:
        return connection.recv(1)
    except ConnectionResetError:
        return b""


def serve(path: str) -> None:
    """Preloads, then forks one run per client until the parent (the test session) is gone."""
    parent = os.getppid()
    own_environment = dict(os.environ)
    _preload()
    preloaded_environment = {name: value for name, value in os.environ.items() if name not in own_environment}
    wakeup_read, wakeup_write = os.pipe()
    os.set_blocking(wakeup_read, False)
    os.set_blocking(wakeup_write, False)
    signal.set_wakeup_fd(wakeup_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    listener.listen(64)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    selector.register(wakeup_read, selectors.EVENT_READ)
    runs: dict[int, socket.socket] = {}  # pid -> its client's connection

    def turn_away(connection: socket.socket, descriptors: list[int], reply: bytes) -> None:
        if reply:
            connection.send(reply)
        connection.close()
        for fd in descriptors:
            os.close(fd)

    def reap(pid: int, options: int = os.WNOHANG) -> None:
        while True:
            try:
                ended, status = os.waitpid(pid, options)
            except ChildProcessError:
                return
            if ended == 0:
                return
            connection = runs.pop(ended, None)
            if connection is not None:
                selector.unregister(connection)
                with contextlib.suppress(OSError):  # A client killed as its run ended.
                    connection.send(f"status {status}".encode())
                connection.close()
            if pid != -1:
                return

    while os.getppid() == parent:
        events = selector.select(timeout=5)
        # Dropped clients first: their runs are killed and reaped before any new fork.
        for key, _ in sorted(events, key=lambda event: event[0].fileobj is listener):
            if key.fileobj is wakeup_read:
                with contextlib.suppress(BlockingIOError):  # Drained until empty.
                    while os.read(wakeup_read, 512):
                        pass
                reap(-1)
            elif key.fileobj is listener:
                connection, _ = listener.accept()
                message, descriptors, _, _ = socket.recv_fds(connection, _MAX_REQUEST, 3)
                if not message:  # A client that only looked whether the server listens.
                    turn_away(connection, descriptors, b"")
                    continue
                request = json.loads(message)
                changed = set(request["environment"].items()) ^ set(own_environment.items())
                read_at_import = sorted({name for name, _ in changed if _READ_AT_IMPORT.match(name)})
                if len(descriptors) != 3 or read_at_import:
                    print(
                        f"exec, for {read_at_import or 'missing standard files'}: {request['arguments'][:3]}",
                        flush=True,
                    )
                    turn_away(connection, descriptors, b"exec")
                    continue
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    signal.set_wakeup_fd(-1)
                    os.close(wakeup_read)
                    os.close(wakeup_write)
                    server_files = [selector, listener, connection, *runs.values()]
                    _become_the_run(request, descriptors, server_files, preloaded_environment)
                for fd in descriptors:
                    os.close(fd)
                runs[pid] = connection
                print(f"pid {pid}: {' '.join(request['arguments'])[:300]}", flush=True)
                selector.register(connection, selectors.EVENT_READ, pid)
                connection.send(f"pid {pid}".encode())
            elif key.data in runs and not _received(key.fileobj):
                # Hung up before its run ended: the client was killed, and the run goes with it.
                os.kill(key.data, signal.SIGKILL)
                reap(key.data, 0)


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve(sys.argv[2])
    else:
        run_client(sys.argv[1:])
