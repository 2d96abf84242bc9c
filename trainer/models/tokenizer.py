"""Raw strings -> encoder inputs, as TensorFlow ops: the steps every encoder family's tokenizer shares.

The same tokenizer object runs in the tf.data pipeline during training and
inside the exported serving graph, so training and serving cannot disagree.
Every kind maps a 1-D batch of strings to the BERT input dict:
`input_word_ids`, `input_mask`, `input_type_ids`, each int32 [batch, seq_length].
Each family's own tokenizer (WordPiece, SentencePiece, a hub preprocessor)
lives beside its model and subclasses `Tokenizer`.
"""

from collections.abc import Callable
import dataclasses
import hashlib

import tensorflow as tf
import tensorflow_text as tf_text

from trainer.errors import UserError

# Reviews carry HTML line breaks ("<br />"); they are noise to the tokenizers.
_MARKUP = r"(?i)<br\s*/?>"
# [CLS] and [SEP] around one segment; one more [SEP] after a second.
NUM_SPECIAL_TOKENS = 2


class VocabularyError(UserError):
    """A vocabulary file cannot serve the model: unreadable, or missing the special tokens."""


@dataclasses.dataclass(frozen=True)
class Truncation:
    """Which tokens of a text longer than its budget are kept: the first ones (`head`), the last
    ones (`tail`), or `head_fraction` of the budget from the start and the rest from the end (`head_tail`)."""

    kind: str = "head"
    head_fraction: float = 0.25


HEAD = Truncation()


def clean_text(texts: tf.Tensor) -> tf.Tensor:
    return tf.strings.regex_replace(texts, _MARKUP, " ")


def truncate(token_ids: tf.RaggedTensor, max_tokens: int | tf.Tensor, truncation: Truncation) -> tf.RaggedTensor:
    """Keeps at most `max_tokens` tokens of each row of [batch, (tokens)] (one budget, or one per row).

    `head` keeps the first tokens, `tail` the last ones, `head_tail` the first
    round(max_tokens * head_fraction) and the rest from the end. One gather
    serves all three: kept position j of a long row maps to j before the head
    budget and to j + (length - max_tokens) after it.
    """
    per_row = isinstance(max_tokens, tf.Tensor)
    if truncation.kind == "head":
        head = max_tokens
    elif truncation.kind == "tail":
        head = tf.zeros_like(max_tokens) if per_row else 0
    elif per_row:  # tf.round, like Python's round, takes halves to the even neighbour.
        head = tf.cast(tf.round(tf.cast(max_tokens, tf.float64) * truncation.head_fraction), max_tokens.dtype)
    else:
        head = round(max_tokens * truncation.head_fraction)
    lengths = token_ids.row_lengths()
    positions = tf.ragged.range(tf.minimum(lengths, max_tokens))
    rows = positions.value_rowids()
    overflow = tf.gather(tf.maximum(lengths - max_tokens, 0), rows)
    flat = positions.flat_values
    first_of_tail = tf.gather(head, rows) if per_row else head
    positions = positions.with_flat_values(tf.where(flat >= first_of_tail, flat + overflow, flat))
    return tf.gather(token_ids, positions, batch_dims=1)


def pair_budgets(first: tf.Tensor, second: tf.Tensor, budget: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Tokens kept of each segment of a pair within `budget`, longest first.

    Tokens come off the longer segment, one at a time (off the second when both
    are as long), until the pair fits; first and second are int64 [batch] lengths.
    """
    first_kept = tf.minimum(first, tf.maximum(budget - second, (budget + 1) // 2))
    return first_kept, tf.minimum(second, budget - first_kept)


def fingerprint_of(kind: str, data: bytes) -> str:
    """A short, stable name for a tokenizer of `kind` built from `data` (a vocabulary or model file)."""
    return f"{kind}:{hashlib.sha256(data).hexdigest()[:16]}"


class _TracedSteps:
    """A tokenizer's `encode` and `count` as tf.functions of a batch of texts or of pairs, each traced once.

    Every input pipeline, evaluation and serving graph calls the same trace: tracing tensorflow-text's
    ragged ops took 1-2 s each time. No AutoGraph: the steps branch only on Python values, and its source
    rewrite of them took seconds more. A plain object, not tf.Module attributes, so that saving a
    SavedModel does not trace them again; the serving graph holds its own call.
    """

    def __init__(self, encode: Callable, count: Callable):
        texts, pairs = [tf.TensorSpec([None], tf.string)], [tf.TensorSpec([None], tf.string)] * 2
        self.encode_texts = tf.function(lambda t: encode(t, None), input_signature=texts, autograph=False)
        self.encode_pairs = tf.function(encode, input_signature=pairs, autograph=False)
        self.count_texts = tf.function(lambda t: count(t, None), input_signature=texts, autograph=False)
        self.count_pairs = tf.function(count, input_signature=pairs, autograph=False)


class Tokenizer(tf.Module):
    """Shared steps: clean, tokenize (subclass), truncate, add [CLS]/[SEP] and pad.

    One text is packed `[CLS] a [SEP]`, a pair `[CLS] a [SEP] b [SEP]` with
    type ids 0 for a and 1 for b, its budget shared longest first and each
    segment then cut by the truncation's head/tail rule. Subclasses implement
    `_tokenize(texts) -> RaggedTensor [batch, (tokens)]` and, unless they pack
    differently, set the special token ids.
    """

    def __init__(self, name: str, seq_length: int, truncation: Truncation = HEAD, fingerprint: str = ""):
        super().__init__(name=name)
        self.seq_length = seq_length
        self.truncation = truncation
        # What identifies the token ids this tokenizer gives (its vocabulary, casing, hub handle):
        # prepared token shards record it, and training on them checks it.
        self.fingerprint = fingerprint
        self._cls_id = self._sep_id = self._pad_id = 0
        self._traced = _TracedSteps(self._encode, self._count)

    @classmethod
    def check_vocabulary(cls, path: str, flag: str) -> None:
        """Raises VocabularyError unless `path` is a readable, non-empty file (`flag` names where it came from).

        Plain file checks, without TensorFlow ops: it runs before a cluster forms.
        Subclasses add what their format needs.
        """
        if not tf.io.gfile.exists(path):
            raise VocabularyError(f"{flag}: vocabulary {path} not found.")
        if tf.io.gfile.isdir(path):
            raise VocabularyError(f"{flag}: vocabulary {path} is a directory; expected a file.")
        try:
            size = tf.io.gfile.stat(path).length
            with tf.io.gfile.GFile(path, "rb") as f:
                f.read(1)
        except (tf.errors.OpError, OSError) as e:
            raise VocabularyError(f"{flag}: vocabulary {path} cannot be read ({getattr(e, 'message', e)}).") from None
        if not size:
            raise VocabularyError(f"{flag}: vocabulary {path} is empty.")

    def _tokenize(self, texts: tf.Tensor) -> tf.RaggedTensor:
        raise NotImplementedError

    def _pack(self, segments: list[tf.RaggedTensor]) -> dict[str, tf.Tensor]:
        ids, type_ids = tf_text.combine_segments(segments, self._cls_id, self._sep_id)
        word_ids, mask = tf_text.pad_model_inputs(ids, self.seq_length, pad_value=self._pad_id)
        type_ids, _ = tf_text.pad_model_inputs(type_ids, self.seq_length)
        return {"input_word_ids": word_ids, "input_mask": mask, "input_type_ids": type_ids}

    def _segments(self, texts: tf.Tensor, text_pairs: tf.Tensor | None) -> list[tf.RaggedTensor]:
        """The tokens of each segment, truncated to fit seq_length with the special tokens."""
        first = self._tokenize(clean_text(texts))
        if text_pairs is None:
            return [truncate(first, self.seq_length - NUM_SPECIAL_TOKENS, self.truncation)]
        second = self._tokenize(clean_text(text_pairs))
        budgets = pair_budgets(first.row_lengths(), second.row_lengths(), self.seq_length - NUM_SPECIAL_TOKENS - 1)
        return [truncate(segment, budget, self.truncation) for segment, budget in zip((first, second), budgets)]

    def __call__(self, texts: tf.Tensor, text_pairs: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
        """Encoder inputs of a batch of texts, or of text pairs (`text_pairs`, as many as `texts`)."""
        return self._traced.encode_texts(texts) if text_pairs is None else self._traced.encode_pairs(texts, text_pairs)

    def lengths(self, texts: tf.Tensor, text_pairs: tf.Tensor | None = None) -> tf.Tensor:
        """Tokens each text (or pair) occupies after truncation, special tokens included: int32 [batch]."""
        return self._traced.count_texts(texts) if text_pairs is None else self._traced.count_pairs(texts, text_pairs)

    def _encode(self, texts: tf.Tensor, text_pairs: tf.Tensor | None) -> dict[str, tf.Tensor]:
        inputs = {key: tf.cast(value, tf.int32) for key, value in self._pack(self._segments(texts, text_pairs)).items()}
        # A static sequence length lets tf.distribute build well-formed empty batches
        # for idle replicas, and XLA compile once per length.
        return {key: tf.ensure_shape(value, [None, self.seq_length]) for key, value in inputs.items()}

    def _count(self, texts: tf.Tensor, text_pairs: tf.Tensor | None) -> tf.Tensor:
        segments = self._segments(texts, text_pairs)
        return tf.cast(tf.add_n([s.row_lengths() for s in segments]) + len(segments) + 1, tf.int32)
