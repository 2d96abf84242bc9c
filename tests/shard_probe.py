"""One worker of a MultiWorkerMirroredStrategy cluster that records which examples it reads: test-only.

Run by tests/test_multi_worker.py through launch/local_cluster.sh (as its
LOCAL_CLUSTER_WORKER_CMD), one process per worker:

    python tests/shard_probe.py --probe_dir=DIR --vocab_path=VOCAB [launcher flags...]

It builds the trainer's own input path for one bucketed epoch (token counts
computed in shares, the batch plan, `pipeline.dataset_fn` through
`distribute_datasets_from_function`) over examples whose label is their own
index, and writes DIR/worker-<task index>.json: the rows this worker
tokenized for the counts, the example indices each of its replicas received
per step, and the lengths every worker must agree on.
"""

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from trainer import strategy as strategy_lib  # noqa: E402
from trainer.data import batching, pipeline  # noqa: E402
from trainer.data.sources import Examples  # noqa: E402
from trainer.models.bert.tokenizer import WordPieceTokenizer  # noqa: E402

NUM_EXAMPLES = 203
GLOBAL_BATCH = 8
SEQ_LENGTH = 32


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--probe_dir", required=True)
    parser.add_argument("--vocab_path", required=True)
    args, _ = parser.parse_known_args()  # The launcher's trainer flags are not for the probe.
    strategy = strategy_lib.create_strategy("multi_worker_mirrored")
    rng = np.random.default_rng(0)
    words = ["good", "bad", "film", "plot", "the", "and", "great", "boring"]
    examples = Examples(
        texts=np.array([" ".join(rng.choice(words, size=rng.integers(1, 40))) for _ in range(NUM_EXAMPLES)], object),
        labels=np.arange(NUM_EXAMPLES, dtype=np.int32),  # Each label names its example.
        ids=np.array([str(i) for i in range(NUM_EXAMPLES)], object),
    )
    tokenizer = WordPieceTokenizer(args.vocab_path, SEQ_LENGTH)
    tokenized = []

    def count_tokens(start: int, stop: int) -> np.ndarray:
        tokenized.append([start, stop])
        return pipeline.token_lengths(examples.texts[start:stop], tokenizer)

    lengths = strategy_lib.compute_in_shares(strategy, NUM_EXAMPLES, count_tokens)
    buckets = batching.bucket_lengths(SEQ_LENGTH, 4)
    steps = batching.steps_per_epoch(NUM_EXAMPLES, GLOBAL_BATCH)
    plan = batching.train_plan(lengths, GLOBAL_BATCH, seed=1, buckets=buckets, start_step=0, end_step=steps)
    dataset = strategy.distribute_datasets_from_function(
        pipeline.dataset_fn(examples.texts, examples.labels.astype(np.float32), plan, tokenizer)
    )
    consumed = []
    for _, labels, _ in dataset:
        (local_labels,) = strategy.experimental_local_results(labels)  # One replica per CPU worker.
        consumed.append(local_labels.numpy().astype(int).tolist())
        if len(consumed) == steps:
            break
    record = {
        "tokenized": tokenized,
        "consumed": consumed,
        "lengths": lengths.tolist(),
        "expected_lengths": pipeline.token_lengths(examples.texts, tokenizer).tolist(),
        "plan": plan.indices.tolist(),
    }
    worker = strategy_lib.worker_id(strategy)
    with open(os.path.join(args.probe_dir, f"worker-{worker}.json"), "w") as f:
        json.dump(record, f)


if __name__ == "__main__":
    main()
