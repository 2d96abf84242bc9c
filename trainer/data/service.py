r"""The tf.data service for the training input: tokenization on other machines' CPUs.

The trainer builds its per-pipeline dataset (records -> tokenized, padded
batches) as usual; with `--config.data.service_address` set, `distribute`
sends it through a tf.data service dispatcher, whose workers run the dataset
graph and stream the finished batches back. This module is also the entry
point of those servers:

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

from collections.abc import Iterator
import ipaddress
import re
import signal
import socket
import sys
import threading
import time
import uuid

from absl import app, flags, logging
import grpc
import tensorflow as tf
import tensorflow_text  # noqa: F401  Registers the tokenizers' ops (FastBertNormalize, ...) in this process.

from trainer import errors

FLAG = "--config.data.service_address"
ROLES = ("dispatcher", "worker")
DEFAULT_DISPATCHER_PORT = 5050

# How the service processes one job (one training input pipeline's dataset).
#
# DYNAMIC: the dispatcher hands out the dataset's source elements (here: the
# pipeline's shard files, epoch after epoch) one split at a time to whichever
# service worker asks, and the job's single consumer receives every batch
# exactly once. With one service worker the splits are taken, processed and
# returned in order, so the batches equal the local pipeline's in content and
# order, resume skip included (tests/test_data_service.py compares them).
#
# This does not shard the trainer's data a second time: the strategy's
# InputContext already gave each training input pipeline its own files (or
# records), each pipeline is its own job (see `distribute`), and all that a
# job's workers produce goes to that one pipeline. The sharding that would drop
# data, a job shared by several consumers, is what the job names rule out.
#
# Why not OFF ("parallel_epochs"): every service worker would then produce the
# whole dataset, so a second worker (started by mistake, or a restarted one,
# which begins again from the start) makes the trainer read records twice,
# interleaved: silently wrong training. DYNAMIC never repeats a batch; a
# restarted worker can lose the batches it held ("at most once"). The static
# policies (FILE, DATA, ...) need a fixed worker list and readers co-located
# with the workers.
#
# With more than one service worker each runs the pipeline over the files it is
# handed: batches come in the order workers finish them, and a resumed run's
# skip of the consumed batches happens on each worker. Exact, reproducible and
# exactly resumed runs therefore use one service worker per job.
PROCESSING_MODE = tf.data.experimental.service.ShardingPolicy.DYNAMIC

_SCHEME = "grpc://"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*$")
_DISPATCHER_RPC = "/tensorflow.data.DispatcherService/"

FLAGS = flags.FLAGS


# --- addresses ---------------------------------------------------------------------------------


def _split_host_port(host_port: str) -> tuple[str, int] | None:
    """(host, port) of `host:port` or `[ipv6]:port`, or None when it is not one."""
    host, colon, port = host_port.rpartition(":")
    if not colon or not re.fullmatch(r"\d{1,5}", port) or not 0 < int(port) < 65536:
        return None
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return None
        return host, int(port)
    return (host, int(port)) if _HOSTNAME.match(host) else None


def normalize_address(address: str, flag: str = FLAG) -> str:
    """`grpc://HOST:PORT` for a dispatcher address given as `grpc://HOST:PORT` or `HOST:PORT`.

    Raises UserError naming `flag` for anything else: another scheme, a missing
    or invalid port, a path, spaces. HOST is a name, an IPv4 address or an IPv6
    address in brackets.
    """
    text = address.strip() if isinstance(address, str) else ""
    expected = "expected grpc://HOST:PORT or HOST:PORT, e.g. grpc://10.0.0.5:5050"
    if not text:
        raise errors.UserError(f"{flag} is empty; {expected}.")
    scheme, sep, rest = text.partition("://")
    if sep and scheme.lower() != "grpc":
        raise errors.UserError(
            f"{flag}={address}: the tf.data service speaks grpc:// only, not {scheme}://; {expected}."
        )
    parsed = _split_host_port(rest if sep else text)
    if parsed is None:
        raise errors.UserError(f"{flag}={address} is not a dispatcher address; {expected} (port 1-65535).")
    host, port = parsed
    return f"{_SCHEME}{host}:{port}"


def check_address(address: str) -> None:
    """Raises UserError naming --config.data.service_address unless `address` is a dispatcher address."""
    normalize_address(address)


def host_port(address: str, flag: str = FLAG) -> str:
    """`HOST:PORT` of a dispatcher address, as WorkerConfig and gRPC channels take it."""
    return normalize_address(address, flag)[len(_SCHEME) :]


# --- reachability ------------------------------------------------------------------------------


def _protobuf_fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of each field of a serialized protobuf message: enough to read two replies."""

    def varint(position: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            byte = data[position]
            value |= (byte & 0x7F) << shift
            position += 1
            if byte < 0x80:
                return value, position
            shift += 7

    position = 0
    while position < len(data):
        key, position = varint(position)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, position = varint(position)
        elif wire_type == 2:
            size, position = varint(position)
            value, position = data[position : position + size], position + size
        elif wire_type in (1, 5):
            size = 8 if wire_type == 1 else 4
            value, position = data[position : position + size], position + size
        else:
            raise ValueError(f"unexpected protobuf wire type {wire_type}")
        yield number, value


def _worker_addresses(reply: bytes) -> list[str]:
    """Worker addresses in a GetWorkersResponse (`repeated WorkerInfo workers = 1`, `string address = 1`)."""
    addresses = []
    for number, info in _protobuf_fields(reply):
        if number == 1 and isinstance(info, bytes):
            addresses += [value.decode() for field, value in _protobuf_fields(info) if field == 1]
    return sorted(addresses)


def check_dispatcher(address: str, timeout_seconds: float = 30.0, min_workers: int = 1) -> list[str]:
    """Waits up to `timeout_seconds` for the dispatcher at `address` to answer with at least `min_workers`
    registered workers; returns their addresses. Raises UserError naming the address otherwise.

    Asks the dispatcher itself over gRPC (its GetVersion and GetWorkers calls), so
    an open port that is not a dispatcher (a worker's, say) is told apart. Run it
    once at start: a trainer reading from a dispatcher that is not there, or has
    no workers, would otherwise wait without end.
    """
    target = normalize_address(address)
    where = f"{FLAG}={target}"
    deadline = time.monotonic() + timeout_seconds
    with grpc.insecure_channel(target[len(_SCHEME) :]) as channel:

        def call(method: str, least_seconds: float = 0.001) -> bytes:
            rpc = channel.unary_unary(_DISPATCHER_RPC + method)  # No (de)serializers: bytes in, bytes out.
            try:
                # wait_for_ready: keep trying to connect (a dispatcher still starting) until the deadline.
                timeout = max(deadline - time.monotonic(), least_seconds)
                return rpc(b"", timeout=timeout, wait_for_ready=True)
            except grpc.RpcError as e:
                code = e.code() if callable(getattr(e, "code", None)) else None
                if code == grpc.StatusCode.UNIMPLEMENTED:
                    raise errors.UserError(
                        f"{where}: something answers there, but not a tf.data service dispatcher (a worker's "
                        "address?). Give the address of `python -m trainer.data.service --role=dispatcher`."
                    ) from None
                if code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE):
                    raise errors.UserError(
                        f"{where}: no tf.data service dispatcher answered within {timeout_seconds:g} s. Is "
                        "`python -m trainer.data.service --role=dispatcher` (or launch/data_service.sh) running "
                        "there, and is the port reachable from this machine?"
                    ) from None
                details = e.details() if callable(getattr(e, "details", None)) else e
                raise errors.UserError(f"{where}: the dispatcher failed to answer ({code}: {details}).") from None

        call("GetVersion")
        while True:
            # It has answered: a late GetWorkers call still gets a few seconds.
            workers = _worker_addresses(call("GetWorkers", least_seconds=5.0))
            if len(workers) >= min_workers:
                break
            if time.monotonic() >= deadline:
                raise errors.UserError(
                    f"{where}: the dispatcher answers but has {len(workers)} worker(s) after {timeout_seconds:g} s "
                    f"(needs {min_workers}). Start one: python -m trainer.data.service --role=worker "
                    f"--dispatcher={target[len(_SCHEME) :]}"
                )
            time.sleep(min(0.2, max(deadline - time.monotonic(), 0)))
    logging.info("tf.data service dispatcher %s answers; workers: %s.", target, ", ".join(workers) or "none")
    if len(workers) > 1:
        logging.warning(
            "The tf.data service at %s has %d workers: each batch still arrives once, but in the order the "
            "workers finish them, and a resumed run skips its consumed batches on each worker (exact, "
            "reproducible runs need one worker).",
            target,
            len(workers),
        )
    return workers


# --- the input pipeline ------------------------------------------------------------------------


def pipeline_job_name(context: tf.distribute.InputContext, prefix: str = "train") -> str:
    """A readable job name for one training input pipeline, e.g. `train-pipeline-1-of-2`."""
    return f"{prefix}-pipeline-{context.input_pipeline_id}-of-{context.num_input_pipelines}"


def distribute(dataset: tf.data.Dataset, address: str, job_name: str) -> tf.data.Dataset:
    """`dataset`'s elements, computed by the tf.data service at `address` instead of in this process.

    With one service worker the elements equal the local dataset's, in order.
    The dataset must be splittable by its source (`from_tensor_slices`, `range`,
    files), use only ops registered in the servers (they import tensorflow_text)
    and no Python code (`py_function`, `from_generator`), which a server in
    another process cannot run.

    `job_name` labels the job (use `pipeline_job_name`); a random suffix makes
    each call its own job. Job names are global to the dispatcher and outlive a
    run (journalled in fault-tolerant mode), and a consumer that names an
    existing job joins it, whatever dataset it brought. Hence a fixed name would
    let two training workers split one stream, hand a restarted run the
    remainder (or, for a finished job, none) of the previous run's stream, and
    feed a rebuilt plan the old one's batches. Iterating the returned dataset
    again starts a fresh pass, as locally.
    """
    if not job_name:
        raise ValueError("distribute: job_name must be a non-empty string.")
    service = normalize_address(address)
    job = f"{job_name}.{uuid.uuid4().hex[:12]}"
    logging.info("Input from the tf.data service at %s, job %s (%s processing).", service, job, PROCESSING_MODE.name)
    return dataset.apply(
        tf.data.experimental.service.distribute(processing_mode=PROCESSING_MODE, service=service, job_name=job)
    )


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
    if _split_host_port(given):
        return given
    if _HOSTNAME.match(given) or given.startswith("["):
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
        rpc = channel.unary_unary(_DISPATCHER_RPC + "GetVersion")
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
            address[len(_SCHEME) :],
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
    (the input pipeline does) adds nothing to trainer.main's flags."""
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
