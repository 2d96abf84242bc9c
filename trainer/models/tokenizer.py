"""Raw strings -> encoder inputs, as TensorFlow ops: the steps every encoder family's tokenizer shares.

The same tokenizer object runs in the tf.data pipeline during training and
inside the exported serving graph, so training and serving cannot disagree.
Every kind maps a 1-D batch of strings to the BERT input dict:
`input_word_ids`, `input_mask`, `input_type_ids`, each int32 [batch, seq_length].
Each family's own tokenizer (WordPiece, SentencePiece, a hub preprocessor)
lives beside its model and subclasses `Tokenizer`.
"""

import dataclasses

import tensorflow as tf
import tensorflow_text as tf_text

from trainer.errors import UserError

# Reviews carry HTML line breaks ("<br />"); they are noise to the tokenizers.
_MARKUP = r"(?i)<br\s*/?>"
# [CLS] and [SEP] around one segment.
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


def truncate(token_ids: tf.RaggedTensor, max_tokens: int, truncation: Truncation) -> tf.RaggedTensor:
    """Keeps at most `max_tokens` tokens of each row of [batch, (tokens)].

    `head` keeps the first tokens, `tail` the last ones, `head_tail` the first
    round(max_tokens * head_fraction) and the rest from the end. One gather
    serves all three: kept position j of a long row maps to j before the head
    budget and to j + (length - max_tokens) after it.
    """
    head = {"head": max_tokens, "tail": 0}.get(truncation.kind, round(max_tokens * truncation.head_fraction))
    lengths = token_ids.row_lengths()
    positions = tf.ragged.range(tf.minimum(lengths, max_tokens))
    overflow = tf.gather(tf.maximum(lengths - max_tokens, 0), positions.value_rowids())
    flat = positions.flat_values
    positions = positions.with_flat_values(tf.where(flat >= head, flat + overflow, flat))
    return tf.gather(token_ids, positions, batch_dims=1)


class Tokenizer(tf.Module):
    """Shared steps: clean, tokenize (subclass), truncate, add [CLS]/[SEP] and pad.

    Subclasses implement `_tokenize(texts) -> RaggedTensor [batch, (tokens)]`
    and, unless they pack differently, set the special token ids.
    """

    def __init__(self, name: str, seq_length: int, truncation: Truncation = HEAD):
        super().__init__(name=name)
        self.seq_length = seq_length
        self.truncation = truncation
        self._cls_id = self._sep_id = self._pad_id = 0

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

    def _pack(self, token_ids: tf.RaggedTensor) -> dict[str, tf.Tensor]:
        ids, type_ids = tf_text.combine_segments([token_ids], self._cls_id, self._sep_id)
        word_ids, mask = tf_text.pad_model_inputs(ids, self.seq_length, pad_value=self._pad_id)
        type_ids, _ = tf_text.pad_model_inputs(type_ids, self.seq_length)
        return {"input_word_ids": word_ids, "input_mask": mask, "input_type_ids": type_ids}

    def __call__(self, texts: tf.Tensor) -> dict[str, tf.Tensor]:
        token_ids = self._tokenize(clean_text(texts))
        token_ids = truncate(token_ids, self.seq_length - NUM_SPECIAL_TOKENS, self.truncation)
        inputs = {key: tf.cast(value, tf.int32) for key, value in self._pack(token_ids).items()}
        # A static sequence length lets tf.distribute build well-formed empty batches
        # for idle replicas, and XLA compile once per length.
        return {key: tf.ensure_shape(value, [None, self.seq_length]) for key, value in inputs.items()}

    def lengths(self, texts: tf.Tensor) -> tf.Tensor:
        """Tokens each text occupies after truncation, with [CLS] and [SEP]: int32 [batch]."""
        num_tokens = self._tokenize(clean_text(texts)).row_lengths() + NUM_SPECIAL_TOKENS
        return tf.cast(tf.minimum(num_tokens, self.seq_length), tf.int32)
