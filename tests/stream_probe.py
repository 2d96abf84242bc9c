"""One worker of a MultiWorkerMirroredStrategy cluster that records which streamed records it reads: test-only.

Run by tests/test_streams.py through launch/local_cluster.sh (as its
LOCAL_CLUSTER_WORKER_CMD), one process per worker:

    python tests/stream_probe.py --probe_dir=DIR --vocab_path=VOCAB --data=GLOB [launcher flags...]

It streams CSV shards whose label is each record's own number through the
trainer's StreamInput under the cluster's strategy: one evaluation pass (every
record once, the workers' shares of unequal size) and the first training
steps. It writes DIR/worker-<id>.json with the numbers its replica received.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from trainer import strategy as strategy_lib  # noqa: E402
from trainer.data.stream_input import StreamInput  # noqa: E402
from trainer.data.streams import Stream, StreamSource  # noqa: E402
from trainer.data.tables import Columns  # noqa: E402
from trainer.models.bert.tokenizer import WordPieceTokenizer  # noqa: E402
from trainer.tasks import labels  # noqa: E402

GLOBAL_BATCH = 8
TRAINING_STEPS = 12


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--probe_dir", required=True)
    parser.add_argument("--vocab_path", required=True)
    parser.add_argument("--data", required=True)
    args, _ = parser.parse_known_args()  # The launcher's trainer flags are not for the probe.
    strategy = strategy_lib.create_strategy("multi_worker_mirrored")
    stream = Stream(StreamSource.open(args.data, "--data", Columns("text", "", "label")), "train")
    # A regression-style encoder: each record's target is its own number.
    stream_input = StreamInput(strategy, WordPieceTokenizer(args.vocab_path, 32), labels.encode_number, 32, 2, seed=3)

    def local(values) -> list[int]:
        (value,) = strategy.experimental_local_results(values)  # One replica per CPU worker.
        return value.numpy().astype(int).tolist()

    evaluated = [local(targets) for _, targets, _ in stream_input.evaluation_batches(stream, "eval", 8).batches]
    training = stream_input.training_batches(stream, GLOBAL_BATCH, 0, TRAINING_STEPS, [])
    trained = [local(next(training.iterator)[1]) for _ in range(TRAINING_STEPS)]
    worker = strategy_lib.worker_id(strategy)
    with open(os.path.join(args.probe_dir, f"worker-{worker}.json"), "w") as f:
        json.dump({"evaluated": evaluated, "trained": trained}, f)


if __name__ == "__main__":
    main()
