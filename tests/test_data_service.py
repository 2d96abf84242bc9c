"""The tf.data service path (trainer/data/service.py, launch/data_service.sh): tokenized batches
through a dispatcher and worker equal local ones, address checks, and the launcher's life cycle.

The servers of the in-process tests run in this process on loopback; the launcher test starts
real server processes (about 10-20 s of TensorFlow imports).
"""

import gc
import queue
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

from trainer import errors, experiment
from trainer.data import batching, pipeline
from trainer.data import service_client as service
from trainer.data.stream_input import StreamInput
from trainer.data.streams import Stream, StreamSource
from trainer.data.tables import Columns
from trainer.models.bert.tokenizer import WordPieceTokenizer
from trainer.tasks import labels as labels_lib

from conftest import REPO, make_review, subprocess_env

SEQ_LENGTH = 32
GLOBAL_BATCH = 8
STEPS = 8
_svc = tf.data.experimental.service


def release_iterators() -> None:
    """Collects dead tf.data iterators now: one collected after its dispatcher stopped retries the
    release call for many seconds."""
    gc.collect()


@pytest.fixture(scope="module")
def dispatcher():
    """A dispatcher and one worker in this process; yields the dispatcher's grpc:// address."""
    server = _svc.DispatchServer(_svc.DispatcherConfig(port=0))
    worker = _svc.WorkerServer(_svc.WorkerConfig(dispatcher_address=service.host_port(server.target)))
    yield server.target
    release_iterators()
    worker.stop()
    server.stop()


@pytest.fixture(scope="module")
def examples(vocab_path):
    """Texts, labels, a tokenizer and a training plan of 2 length buckets, as the trainer builds them."""
    rng = random.Random(0)
    texts = np.array([make_review(rng, i % 2 == 0, length=rng.randint(4, 40)) for i in range(64)], dtype=object)
    labels = np.arange(64, dtype=np.int32) % 2
    tokenizer = WordPieceTokenizer(vocab_path, SEQ_LENGTH)
    buckets = batching.bucket_lengths(SEQ_LENGTH, 2)
    lengths = pipeline.token_lengths(texts, tokenizer)
    plan = batching.train_plan(lengths, GLOBAL_BATCH, 0, buckets, 0, STEPS)
    assert len(set(plan.lengths.tolist())) == 2, "the plan should mix both bucket lengths"
    return texts, labels, tokenizer, plan


def pipeline_dataset(examples, context: tf.distribute.InputContext) -> tf.data.Dataset:
    texts, labels, tokenizer, plan = examples
    return pipeline.dataset_fn(texts, labels, plan, tokenizer)(context)


def assert_same_elements(local: list, remote: list) -> None:
    assert len(remote) == len(local)
    for index, (expected, got) in enumerate(zip(local, remote)):
        tf.nest.assert_same_structure(expected, got)
        for a, b in zip(tf.nest.flatten(expected), tf.nest.flatten(got)):
            assert a.dtype == b.dtype and a.shape == b.shape, f"element {index}: {a.shape} vs {b.shape}"
            np.testing.assert_array_equal(a, b, err_msg=f"element {index}")


# --- batches through the service ---------------------------------------------------------------


@pytest.mark.slow
def test_tokenized_batches_through_the_service_equal_local_ones(dispatcher, examples):
    # Two input pipelines of 2 replicas each, read at the same time as two training workers would:
    # each gets its own job, and all of its own batches, in the plan's order.
    contexts = [tf.distribute.InputContext(2, pipeline_id, num_replicas_in_sync=4) for pipeline_id in range(2)]
    local = [list(pipeline_dataset(examples, context).as_numpy_iterator()) for context in contexts]
    remote_iterators = [
        service.distribute(pipeline_dataset(examples, c), dispatcher, service.pipeline_job_name(c)).as_numpy_iterator()
        for c in contexts
    ]
    remote = [[], []]
    for first, second in zip(*remote_iterators):
        remote[0].append(first)
        remote[1].append(second)
    for iterator, got in zip(remote_iterators, remote):
        got.extend(iterator)  # Nothing left, if both are as long as they should be.
    del remote_iterators
    for expected, got in zip(local, remote):
        assert len(expected) == STEPS * 2  # 2 local replicas' slices per step.
        assert_same_elements(expected, got)
    # The two pipelines hold different slices, so the equality above is no accident of sharing.
    assert not np.array_equal(local[0][0][0]["input_word_ids"], local[1][0][0]["input_word_ids"])


@pytest.mark.slow
def test_streamed_training_batches_through_the_service_equal_local_ones(dispatcher, tmp_path, vocab_path):
    # The streamed path: shuffled shards, length buckets, the resume skip, then the service.
    rng = random.Random(1)
    for shard in range(3):
        rows = [f"{make_review(rng, i % 2 == 0, length=rng.randint(4, 40))},{i % 2}" for i in range(30)]
        (tmp_path / f"part-{shard}.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
    source = StreamSource.open(f"{tmp_path}/part-*.csv", "--config.data.path", Columns("text", "", "label"))
    stream = Stream(source, "train", 0.2, "train", SEQ_LENGTH)
    tokenizer = WordPieceTokenizer(vocab_path, SEQ_LENGTH)

    def batches(address: str, consumed: int) -> list:
        stream_input = StreamInput(
            None, tokenizer, labels_lib.encode_binary, SEQ_LENGTH, 2, seed=5, shuffle_buffer=20,
            service_address=address,
        )  # fmt: skip
        make = stream_input.dataset_fn(stream, GLOBAL_BATCH, training=True, consumed=consumed)
        return list(make(tf.distribute.InputContext()).take(12).as_numpy_iterator())

    local = batches("", consumed=3)
    assert len({element[0]["input_word_ids"].shape[1] for element in local}) == 2, "both bucket lengths"
    assert_same_elements(local, batches(dispatcher, consumed=3))
    release_iterators()


@pytest.mark.slow
def test_a_job_name_given_twice_is_not_shared(dispatcher):
    # A consumer naming an existing job joins it whatever its dataset; distribute makes each call its own job.
    first = service.distribute(tf.data.Dataset.range(5), dispatcher, "train")
    second = service.distribute(tf.data.Dataset.range(100, 107), dispatcher, "train")
    first_iterator, second_iterator = iter(first), iter(second)
    assert [int(x) for x in second_iterator] == list(range(100, 107))
    assert [int(x) for x in first_iterator] == list(range(5))
    # Iterating again is a new pass, as locally.
    assert [int(x) for x in first] == list(range(5))


def test_two_workers_give_every_batch_exactly_once(examples):
    server = _svc.DispatchServer(_svc.DispatcherConfig(port=0))
    workers = [
        _svc.WorkerServer(_svc.WorkerConfig(dispatcher_address=service.host_port(server.target))) for _ in range(2)
    ]
    try:
        assert len(service.check_dispatcher(server.target, timeout_seconds=10, min_workers=2)) == 2
        context = tf.distribute.InputContext()
        local = list(pipeline_dataset(examples, context).as_numpy_iterator())
        remote = list(service.distribute(pipeline_dataset(examples, context), server.target, "two").as_numpy_iterator())

        def key(element):
            features, labels, weights = element
            return features["input_word_ids"].tobytes() + labels.tobytes() + weights.tobytes()

        # Dynamic sharding: no batch is repeated or lost, whatever worker made it (the order may differ).
        assert sorted(map(key, remote)) == sorted(map(key, local))
    finally:
        release_iterators()
        for worker in workers:
            worker.stop()
        server.stop()


# --- addresses ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address, normalized",
    [
        ("grpc://10.0.0.5:5050", "grpc://10.0.0.5:5050"),
        ("data-host.example.com:5050", "grpc://data-host.example.com:5050"),
        (" GRPC://localhost:1 ", "grpc://localhost:1"),
        ("[::1]:5050", "grpc://[::1]:5050"),
    ],
)
def test_addresses_are_normalized(address, normalized):
    service.check_address(address)
    assert service.normalize_address(address) == normalized


@pytest.mark.parametrize(
    "address",
    ["", "localhost", "grpc://localhost", "http://host:5050", "host:0", "host:70000", "host:5050/path", "a b:1",
     ":5050", "[nope]:5050", "host:port"],
)  # fmt: skip
def test_malformed_addresses_are_refused_naming_the_flag(address):
    with pytest.raises(errors.UserError, match=r"--config\.data\.service_address.*grpc://HOST:PORT or HOST:PORT"):
        service.check_address(address)


def test_an_unreachable_dispatcher_is_refused_within_the_timeout():
    with socket.socket() as bound:  # Bound, never listening: connections are refused.
        bound.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{bound.getsockname()[1]}"
        began = time.monotonic()
        with pytest.raises(errors.UserError, match=rf"grpc://{address}: no tf.data service dispatcher answered"):
            service.check_dispatcher(address, timeout_seconds=1.0)
    assert time.monotonic() - began < 5


def test_the_dispatcher_check_tells_a_worker_from_a_dispatcher(dispatcher):
    workers = service.check_dispatcher(dispatcher, timeout_seconds=10)
    assert len(workers) == 1
    with pytest.raises(errors.UserError, match="not a tf.data service dispatcher"):
        service.check_dispatcher(workers[0], timeout_seconds=10)


# --- the launcher ------------------------------------------------------------------------------


def _lines(stream) -> queue.Queue:
    """The stream's lines, read by a thread into a queue (None at its end)."""
    lines: queue.Queue = queue.Queue()

    def read() -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    return lines


@pytest.mark.slow
def test_launcher_serves_a_working_address_and_stops_cleanly_on_sigterm(tmp_path, examples):
    env = dict(subprocess_env(), PYTHON=sys.executable)
    launcher = subprocess.Popen(
        ["bash", str(REPO / "launch" / "data_service.sh"), "1", "--log_dir", str(tmp_path / "logs")],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    try:
        lines = _lines(launcher.stdout)
        deadline = time.monotonic() + 150
        address = None
        while address is None:
            try:
                line = lines.get(timeout=max(deadline - time.monotonic(), 0.1))
            except queue.Empty:
                pytest.fail("the launcher printed no address within 150 s:\n" + "".join(output))
            assert line is not None, "the launcher ended before it was ready:\n" + "".join(output)
            output.append(line)
            found = re.search(r"ready: --config\.data\.service_address=(grpc://127\.0\.0\.1:\d+)$", line.strip())
            address = found and found.group(1)
        assert service.check_dispatcher(address, timeout_seconds=10) != []
        context = tf.distribute.InputContext()
        local = list(pipeline_dataset(examples, context).as_numpy_iterator())
        dataset = service.distribute(pipeline_dataset(examples, context), address, "launcher")
        assert_same_elements(local, list(dataset.as_numpy_iterator()))
        del dataset
        release_iterators()

        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(timeout=40) == 0, "".join(output)
        while (line := lines.get(timeout=10)) is not None:
            output.append(line)
        log = "".join(output)
        assert re.search(r"dispatcher pid \d+ \S+ exit 0 \(ok\)", log), log
        assert re.search(r"worker 1 pid \d+ \S+ exit 0 \(ok\)", log), log
        worker_log = (tmp_path / "logs" / "worker-1.log").read_text()
        assert "tf.data service worker ready at 127.0.0.1:" in worker_log
        assert "stopped" in worker_log.splitlines()[-1]
    finally:
        if launcher.poll() is None:
            launcher.send_signal(signal.SIGTERM)  # It stops its servers by their PIDs.
            try:
                launcher.wait(timeout=30)
            except subprocess.TimeoutExpired:
                launcher.kill()
                launcher.wait()


def test_the_service_flag_is_checked_before_any_work(tmp_path):
    (tmp_path / "part-0.csv").write_text("text,label\ngood,1\nbad,0\n")
    config = experiment.default_config()
    config.data.path = str(tmp_path / "part-0.csv")
    config.data.service_address = "localhost:5050"
    with pytest.raises(errors.UserError, match=r"service_address serves streamed input.*--config\.data\.streaming=on"):
        experiment.validate(config, reads_data=True)
    config.data.streaming = "on"
    config.train.steps = 10
    config.data.service_address = "http://localhost:5050"
    with pytest.raises(errors.UserError, match=r"--config\.data\.service_address=http://localhost:5050: .*grpc://"):
        experiment.validate(config, reads_data=True)
