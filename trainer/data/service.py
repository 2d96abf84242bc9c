r"""The tf.data service for the training input: tokenization on other machines' CPUs.

The servers of the tf.data service that trainer/data/service_client.py
sends training input through: a dispatcher and workers that run the input
pipelines' dataset graphs (reading, tokenization) and stream the finished
batches back.

  python -m trainer.data.service --role=dispatcher --port=5050 [--work_dir=DIR]
  python -m trainer.data.service --role=worker --dispatcher=HOST:5050 --port=5051 \
      [--worker_address=THIS_HOST:5051]

Both run until SIGTERM or SIGINT and then exit 0; launch/data_service.sh
starts a dispatcher and workers on this machine. Exit statuses: 0 stopped on
request, 2 bad flag or unusable port, 1 crash; 143 or 130 when the signal came
within the moment TensorFlow's start() runs (see `_start`).

Both roles import tensorflow_text: the workers run the tokenizer's ops, and in
the dynamic processing mode used here the dispatcher instantiates the dataset
graph too (to split its source), so it needs the same ops registered.
"""

import signal
import socket
import sys
import threading
import time

from absl import app, flags, logging
import grpc
import tensorflow as tf
import tensorflow_text  # noqa: F401  Registers the tokenizers' ops (FastBertNormalize, ...) in this process.

from trainer import errors
from trainer.data.service_client import DISPATCHER_RPC, FLAG, HOSTNAME, SCHEME, host_port, split_host_port

ROLES = ("dispatcher", "worker")
DEFAULT_DISPATCHER_PORT = 5050

FLAGS = flags.FLAGS


# --- the servers -------------------------------------------------------------------------------


def _port(role: str) -> int:
    port = FLAGS.port if FLAGS.port is not None else (DEFAULT_DISPATCHER_PORT if role == "dispatcher" else 0)
    if not 0 <= port < 65536:
        raise errors.UserError(f"--port={port}: expected 1-65535, or 0 for a free port.")
    return port


def _worker_address(port: int) -> str:
    """The worker's address as trainers reach it; `%port%` stands for the bound port."""
    given = (FLAGS.worker_address or "").strip()
    if not given:
        return f"{socket.gethostname()}:{port or '%port%'}"
    if split_host_port(given):
        return given
    if HOSTNAME.match(given) or given.startswith("["):
        return f"{given}:{port or '%port%'}"
    raise errors.UserError(f"--worker_address={FLAGS.worker_address}: expected HOST or HOST:PORT.")


def _server_config(role: str):
    """The DispatcherConfig or WorkerConfig the flags ask for, and a description of it for the log."""
    wrong = {
        "dispatcher": [name for name in ("dispatcher", "worker_address") if FLAGS[name].present],
        "worker": ["work_dir"] if FLAGS["work_dir"].present else [],
    }[role]
    if wrong:
        raise errors.UserError(f"--{wrong[0]} is not for --role={role}.")
    service = tf.data.experimental.service
    port = _port(role)
    if role == "dispatcher":
        work_dir = FLAGS.work_dir
        if work_dir:
            try:
                tf.io.gfile.makedirs(work_dir)
            except (tf.errors.OpError, OSError) as e:
                raise errors.UserError(
                    f"--work_dir={work_dir} cannot be created ({getattr(e, 'message', e)})."
                ) from None
        config = service.DispatcherConfig(port=port, work_dir=work_dir or None, fault_tolerant_mode=bool(work_dir))
        mode = f"fault-tolerant, journal in {work_dir}" if work_dir else "not fault-tolerant: state is lost on restart"
        return config, f"({mode})"
    if not FLAGS.dispatcher:
        raise errors.UserError("--role=worker needs --dispatcher=HOST:PORT (the dispatcher's address).")
    dispatcher = host_port(FLAGS.dispatcher, "--dispatcher")
    worker_address = _worker_address(port)
    config = service.WorkerConfig(
        dispatcher_address=dispatcher,
        worker_address=worker_address,
        port=port,
        data_transfer_address=f"{worker_address.rpartition(':')[0]}:%dts_port%",
    )
    return config, f"at {worker_address} for the dispatcher at {dispatcher}"


def _wait_for_dispatcher(dispatcher: str, stop: threading.Event) -> bool:
    """Asks the dispatcher for its version until it answers (True) or `stop` is set (False)."""
    began = last_log = time.monotonic()
    with grpc.insecure_channel(dispatcher) as channel:
        rpc = channel.unary_unary(DISPATCHER_RPC + "GetVersion")
        while not stop.is_set():
            try:
                rpc(b"", timeout=1.0, wait_for_ready=True)
                return True
            except grpc.RpcError as e:
                if callable(getattr(e, "code", None)) and e.code() == grpc.StatusCode.UNIMPLEMENTED:
                    raise errors.UserError(
                        f"--dispatcher={FLAGS.dispatcher}: something answers there, but not a tf.data service "
                        "dispatcher."
                    ) from None
            if time.monotonic() - last_log >= 30:
                last_log = time.monotonic()
                logging.warning(
                    "Still waiting for the dispatcher at %s to answer (%.0f s): is it running and reachable?",
                    dispatcher,
                    last_log - began,
                )
    return False


def _start(role: str, config):
    """The started server. Signals take their default action meanwhile: start() holds Python's GIL (a
    worker's until the dispatcher registers it), so a Python handler could not run before it returns."""
    service = tf.data.experimental.service
    previous = {number: signal.signal(number, signal.SIG_DFL) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        if role == "dispatcher":
            return service.DispatchServer(config)
        return service.WorkerServer(config)
    except (RuntimeError, tf.errors.OpError) as e:
        if "Could not start gRPC server" in str(e):
            raise errors.UserError(
                f"The tf.data service {role} cannot listen on --port={config.port}: is the port in use?"
            ) from None
        raise errors.TrainerError(f"The tf.data service {role} failed to start: {e}") from None
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _bound_port(server) -> int | None:
    """The port a started server listens on (0 asks the OS for one); None if TensorFlow does not say."""
    if isinstance(server, tf.data.experimental.service.DispatchServer):
        return int(server.target.rpartition(":")[2])
    address = getattr(server, "_address", None)  # WorkerServer has no public accessor.
    return int(address.rpartition(":")[2]) if address else None


def _load(server) -> int | None:
    """Registered workers (dispatcher) or running tasks (worker), for the log; None if unavailable."""
    count = getattr(server, "_num_workers", None) or getattr(server, "_num_tasks", None)
    try:
        return int(count()) if count else None
    except Exception:  # A private accessor: never let it take the server down.
        return None


def _log_ready(role: str, server) -> None:
    port = _bound_port(server)
    if role == "dispatcher":
        address = f"grpc://{socket.gethostname()}:{port}"
        logging.info(
            "tf.data service dispatcher ready at %s (port %s on every interface): trainers take %s=%s (or this "
            "machine's IP address), workers --dispatcher=%s.",
            address,
            port,
            FLAG,
            address,
            address[len(SCHEME) :],
        )
    else:
        logging.info(
            "tf.data service worker ready at %s (port %s), registered with the dispatcher at %s; "
            "tensorflow_text %s is loaded for the tokenizers' ops.",
            _worker_address(port or 0),
            port,
            host_port(FLAGS.dispatcher, "--dispatcher"),
            tensorflow_text.__version__,
        )


def serve(role: str) -> None:
    """Starts the server of `role` and runs it until SIGTERM or SIGINT; then stops it and returns."""
    config, description = _server_config(role)
    stop = threading.Event()
    signals: list[int] = []

    def on_signal(signum, frame) -> None:
        del frame
        signals.append(signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    logging.info("Starting the tf.data service %s %s.", role, description)
    # A worker's start() would block (holding the GIL) until the dispatcher answers: wait for it here first,
    # where a signal still stops the process.
    if role == "worker" and not _wait_for_dispatcher(config.dispatcher_address, stop):
        logging.info("Received %s before the dispatcher answered: exiting.", signal.Signals(signals[0]).name)
        return
    server = _start(role, config)
    _log_ready(role, server)
    load = _load(server)
    while not stop.wait(1.0):
        now = _load(server)
        if now is not None and now != load:
            load = now
            logging.info("%d %s.", now, "worker(s) registered" if role == "dispatcher" else "task(s) running here")
    logging.info("Received %s: stopping the tf.data service %s.", signal.Signals(signals[0]).name, role)
    server.stop()
    logging.info("The tf.data service %s stopped.", role)


def define_flags() -> None:
    """The servers' flags; defined only when this module runs as the entry point, so that importing it
    adds nothing to another program's flags."""
    flags.DEFINE_enum("role", None, ROLES, "Which tf.data service server to run.")
    flags.DEFINE_integer(
        "port",
        None,
        f"Port to listen on (every interface). Default: {DEFAULT_DISPATCHER_PORT} for the dispatcher, a free port "
        "chosen by the OS for a worker (the dispatcher tells the trainers which). 0: a free port.",
    )
    flags.DEFINE_string("dispatcher", None, "--role=worker: the dispatcher's HOST:PORT (or grpc://HOST:PORT).")
    flags.DEFINE_string(
        "worker_address",
        None,
        "--role=worker: HOST or HOST:PORT under which trainers reach this worker; the dispatcher hands it to them. "
        "Default: this machine's host name and --port. Give an address the training machines can resolve.",
    )
    flags.DEFINE_string(
        "work_dir",
        None,
        "--role=dispatcher: a directory for the dispatcher's journal; turns on fault-tolerant mode, so a restarted "
        "dispatcher recovers its registered datasets and jobs. Use a directory only this dispatcher writes.",
    )


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing with one line and exit status 2 for a bad flag or a stray argument."""
    try:
        remaining = FLAGS(argv)
    except flags.Error as e:
        remaining, error = [], e
    else:
        error = None if len(remaining) <= 1 else f"unexpected argument(s) {' '.join(remaining[1:])}"
        if error is None and FLAGS.role is None:
            error = f"--role is required: one of {', '.join(ROLES)}"
    if error:
        sys.stderr.write(f"FATAL Flags parsing error: {error} (--help lists the flags)\n")
        sys.exit(errors.EXIT_USER_ERROR)
    return remaining


def main(argv: list[str]) -> None:
    del argv  # parse_flags refuses anything but flags.
    tf.get_logger().setLevel("WARNING")
    try:
        serve(FLAGS.role)
    except errors.TrainerError as e:
        logging.error("%s", e)
        sys.exit(e.exit_status)


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=parse_flags)
