r"""How long deleting a distributed tf.data iterator takes after it has lived a while.

  python benchmarks/iterator_teardown.py                          # lifetimes 10, 30, 60 s, 3 each: 25 minutes
  python benchmarks/iterator_teardown.py --lifetimes=1 --repeats=1  # a check of the machinery

The trainer deletes a distributed iterator after every evaluation pass and at
the end of training, and such a deletion can wait, idle, for a tf.data
autotuning thread (BENCHMARKS.md). For each lifetime, an iterator over a
cheap pipeline (a parallel map and a prefetch, both AUTOTUNE) is read slowly
for that long through MirroredStrategy and then deleted. It is built four
ways: with TensorFlow's defaults (as the trainer builds it), with autotuning
off in the pipeline, with batches kept in host memory
(`experimental_fetch_to_device=False`), and with both. The CPU stays nearly
idle throughout, so the figures do not depend on load. A wait ends when a
sleeping thread wakes, so it varies from one iterator to the next: each
lifetime is measured --repeats times and every figure shown.
"""

from collections.abc import Callable, Sequence
import time

from absl import app, flags, logging
import tensorflow as tf

flags.DEFINE_list("lifetimes", ["10", "30", "60"], "Seconds each iterator is read before it is deleted.")
flags.DEFINE_integer("repeats", 3, "Iterators measured per lifetime and build.")
flags.DEFINE_float("read_interval", 0.2, "Seconds between two reads: a slow consumer, like a model step.")
FLAGS = flags.FLAGS


def _make_fn(autotune: bool) -> Callable[[tf.distribute.InputContext], tf.data.Dataset]:
    def make(context: tf.distribute.InputContext) -> tf.data.Dataset:
        del context
        doubled = tf.data.Dataset.range(2**62).map(lambda x: x * 2, num_parallel_calls=tf.data.AUTOTUNE)
        options = tf.data.Options()
        if not autotune:
            options.autotune.enabled = False
        return doubled.prefetch(tf.data.AUTOTUNE).with_options(options)

    return make


def _teardown_seconds(distributed: tf.distribute.DistributedDataset, lifetime: float) -> float:
    iterator = iter(distributed)
    start = time.time()
    while time.time() - start < lifetime:
        next(iterator)
        time.sleep(FLAGS.read_interval)
    start = time.time()
    del iterator
    return time.time() - start


def main(argv: Sequence[str]) -> None:
    del argv
    strategy = tf.distribute.MirroredStrategy()
    host_memory = tf.distribute.InputOptions(experimental_fetch_to_device=False)
    builders = {
        "TensorFlow defaults": lambda: strategy.distribute_datasets_from_function(_make_fn(True)),
        "autotuning off": lambda: strategy.distribute_datasets_from_function(_make_fn(False)),
        "host memory": lambda: strategy.distribute_datasets_from_function(_make_fn(True), host_memory),
        "both": lambda: strategy.distribute_datasets_from_function(_make_fn(False), host_memory),
    }
    rows = ["| iterator lifetime | " + " | ".join(builders) + " |", "| ---: |" + " ---: |" * len(builders)]
    for lifetime in (float(value) for value in FLAGS.lifetimes):
        cells = []
        for build in builders.values():
            seconds = [_teardown_seconds(build(), lifetime) for _ in range(FLAGS.repeats)]
            cells.append(", ".join(f"{s:.2f}" for s in seconds) + " s")
        logging.info("lifetime %.0f s: deleting took %s", lifetime, " / ".join(cells))
        rows.append(f"| {lifetime:.0f} s | " + " | ".join(cells) + " |")
    logging.info("Deleting a distributed iterator, TensorFlow %s:\n%s", tf.__version__, "\n".join(rows))


if __name__ == "__main__":
    app.run(main)
