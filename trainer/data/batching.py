"""Batch plans: which examples form each global batch, and the length it is padded to.

A plan is plain numpy, computed the same way on every worker from the seed, so
it is the single source of truth for shuffling, length bucketing, sharding
over input pipelines and resuming at a step:

- Training: epoch e visits a permutation fixed by (seed, e). With several
  buckets, each example goes to the smallest bucket length that holds all its
  tokens; full batches are formed per bucket, the leftovers of all buckets are
  batched together (padded to the longest among them), and only the last
  partial global batch of the epoch is dropped, as without bucketing. Batches
  of one bucket come in runs of `steps_per_run`, so several steps can share
  one compiled function call; runs are ordered by their first example's place
  in the permutation, so a plan whose examples all fit one bucket is the
  unbucketed plan, only padded shorter.
- Evaluation: every example exactly once; the last batch of each bucket is
  filled with padding slots (index -1) that carry zero weight.
"""

import dataclasses

import numpy as np

PADDING_INDEX = -1


@dataclasses.dataclass(frozen=True)
class BatchPlan:
    """indices: int64 [num_batches, global_batch] (-1 = padding slot); lengths: int32 [num_batches]."""

    indices: np.ndarray
    lengths: np.ndarray

    def __len__(self) -> int:
        return len(self.lengths)

    def run_length(self, start: int, limit: int) -> int:
        """How many batches from `start` (at most `limit`) share the length of batch `start`."""
        window = self.lengths[start : start + limit]
        changes = np.flatnonzero(window != window[0])
        return int(changes[0]) if changes.size else len(window)


def bucket_lengths(seq_length: int, num_buckets: int) -> np.ndarray:
    """`num_buckets` evenly spaced lengths ending at seq_length, rounded up to multiples of 8."""
    raw = np.ceil(seq_length * np.arange(1, num_buckets + 1) / num_buckets)
    # Multiples of 8 suit vector units and tensor cores; the last is always seq_length.
    return np.unique(np.minimum(np.ceil(raw / 8) * 8, seq_length).astype(np.int32))


def steps_per_epoch(num_examples: int, global_batch_size: int) -> int:
    """Full global batches in one epoch; the last partial batch is dropped in training."""
    return num_examples // global_batch_size


def _bucket_of(token_lengths: np.ndarray, buckets: np.ndarray) -> np.ndarray:
    return np.searchsorted(buckets, token_lengths, side="left")


def _epoch(
    token_lengths: np.ndarray, global_batch_size: int, seed: int, epoch: int, buckets: np.ndarray, steps_per_run: int
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(token_lengths))
    num_batches = steps_per_epoch(len(order), global_batch_size)
    if len(buckets) == 1:
        indices = order[: num_batches * global_batch_size].reshape(num_batches, global_batch_size)
        return indices, np.full(num_batches, buckets[0], np.int32)
    bucket_ids = _bucket_of(token_lengths[order], buckets)
    runs, leftovers = [], []
    for bucket, length in enumerate(buckets):
        members = order[bucket_ids == bucket]
        full = len(members) // global_batch_size * global_batch_size
        batches = members[:full].reshape(-1, global_batch_size)
        runs += [(run, length) for run in np.split(batches, range(steps_per_run, len(batches), steps_per_run))]
        leftovers.append(members[full:])
    mixed = np.concatenate(leftovers)
    rng.shuffle(mixed)
    for start in range(0, len(mixed) - global_batch_size + 1, global_batch_size):
        batch = mixed[start : start + global_batch_size]
        runs.append((batch[np.newaxis], buckets[_bucket_of(token_lengths[batch], buckets).max()]))
    # Runs come in the order their first example has in the permutation: random, and
    # with every example in one bucket exactly the order of the unbucketed plan.
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    runs = sorted((run for run in runs if len(run[0])), key=lambda run: rank[run[0][0, 0]])
    indices = np.concatenate([run for run, _ in runs])
    lengths = np.concatenate([np.full(len(run), length, np.int32) for run, length in runs])
    assert len(indices) == num_batches
    return indices, lengths


def position_of_step(step: int, skipped: list[int]) -> int:
    """The plan position that step `step` trains on, when the positions in `skipped` are left out."""
    position = step
    for skipped_position in sorted(skipped):
        if skipped_position <= position:
            position += 1
    return position


def train_plan(
    token_lengths: np.ndarray,
    global_batch_size: int,
    seed: int,
    buckets: np.ndarray,
    start_step: int,
    end_step: int,
    steps_per_run: int = 1,
    skipped: list[int] = (),
) -> BatchPlan:
    """The global batches of training steps [start_step, end_step).

    Positions in `skipped` (batches that gave a NaN loss) are left out; later
    steps move on to the following batches.
    """
    first = position_of_step(start_step, skipped)
    last = position_of_step(max(end_step, start_step + 1) - 1, skipped)
    per_epoch = steps_per_epoch(len(token_lengths), global_batch_size)
    first_epoch, last_epoch = first // per_epoch, last // per_epoch
    epochs = [
        _epoch(token_lengths, global_batch_size, seed, epoch, buckets, steps_per_run)
        for epoch in range(first_epoch, last_epoch + 1)
    ]
    positions = np.arange(first, last + 1)
    keep = positions[~np.isin(positions, skipped)][: end_step - start_step] - first_epoch * per_epoch
    indices = np.concatenate([e[0] for e in epochs])[keep]
    lengths = np.concatenate([e[1] for e in epochs])[keep]
    return BatchPlan(indices.astype(np.int64), lengths)


def eval_plan(token_lengths: np.ndarray, global_batch_size: int, buckets: np.ndarray) -> BatchPlan:
    """Every example once, grouped by bucket; short batches are filled with padding slots."""
    bucket_ids = _bucket_of(token_lengths, buckets)
    batches, lengths = [], []
    for bucket, length in enumerate(buckets):
        members = np.flatnonzero(bucket_ids == bucket)
        padded = -(-len(members) // global_batch_size) * global_batch_size
        members = np.concatenate([members, np.full(padded - len(members), PADDING_INDEX)])
        batches.append(members.reshape(-1, global_batch_size))
        lengths += [length] * (padded // global_batch_size)
    return BatchPlan(np.concatenate(batches).astype(np.int64), np.array(lengths, np.int32))
