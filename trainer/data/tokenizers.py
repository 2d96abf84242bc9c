"""Raw strings -> encoder inputs, as TensorFlow ops.

The same tokenizer object runs in the tf.data pipeline during training and
inside the exported serving graph, so training and serving cannot disagree.
Both kinds map a 1-D batch of strings to the BERT input dict:
`input_word_ids`, `input_mask`, `input_type_ids`, each int32 [batch, seq_length].
"""

import tensorflow as tf
import tensorflow_text as tf_text

from trainer.config import ConfigError
from trainer.models import hub_loading

# Reviews carry HTML line breaks ("<br />"); they are noise to WordPiece.
_MARKUP = r"(?i)<br\s*/?>"


def clean_text(texts: tf.Tensor) -> tf.Tensor:
    return tf.strings.regex_replace(texts, _MARKUP, " ")


class WordPieceTokenizer(tf.Module):
    """BERT WordPiece tokenization with tensorflow-text's FastBertTokenizer."""

    def __init__(self, vocab_path: str, seq_length: int, lower_case: bool = True):
        super().__init__(name="wordpiece_tokenizer")
        with tf.io.gfile.GFile(vocab_path) as f:
            vocab = [line.rstrip("\n") for line in f]
        missing = [t for t in ("[CLS]", "[SEP]", "[UNK]", "[PAD]") if t not in vocab]
        if missing:
            raise ConfigError(f"Vocabulary {vocab_path} lacks the special token(s) {missing}.")
        self.vocab_size = len(vocab)
        self.seq_length = seq_length
        self._cls_id = vocab.index("[CLS]")
        self._sep_id = vocab.index("[SEP]")
        self._pad_id = vocab.index("[PAD]")
        self._tokenizer = tf_text.FastBertTokenizer(
            vocab=vocab, token_out_type=tf.int32, lower_case_nfd_strip_accents=lower_case
        )

    def __call__(self, texts: tf.Tensor) -> dict[str, tf.Tensor]:
        token_ids = self._tokenizer.tokenize(clean_text(texts))
        # Room for [CLS] and [SEP]; longer reviews keep their head.
        token_ids = token_ids[:, : self.seq_length - 2]
        ids, type_ids = tf_text.combine_segments([token_ids], self._cls_id, self._sep_id)
        word_ids, mask = tf_text.pad_model_inputs(ids, self.seq_length, pad_value=self._pad_id)
        type_ids, _ = tf_text.pad_model_inputs(type_ids, self.seq_length)
        return _with_static_length(
            {"input_word_ids": word_ids, "input_mask": mask, "input_type_ids": type_ids}, self.seq_length
        )


class HubPreprocessor(tf.Module):
    """A TF Hub BERT preprocessing SavedModel, packed to `seq_length`."""

    def __init__(self, handle: str, seq_length: int):
        super().__init__(name="hub_preprocessor")
        self.seq_length = seq_length
        self._preprocessor = hub_loading.load(handle, "--config.model.hub_preprocessor")

    def __call__(self, texts: tf.Tensor) -> dict[str, tf.Tensor]:
        tokens = self._preprocessor.tokenize(clean_text(texts))
        inputs = self._preprocessor.bert_pack_inputs([tokens], seq_length=self.seq_length)
        return _with_static_length({key: tf.cast(value, tf.int32) for key, value in inputs.items()}, self.seq_length)


def _with_static_length(inputs: dict[str, tf.Tensor], seq_length: int) -> dict[str, tf.Tensor]:
    # A static sequence length lets tf.distribute build well-formed empty batches
    # for idle replicas at the end of evaluation, and XLA compile once.
    return {key: tf.ensure_shape(value, [None, seq_length]) for key, value in inputs.items()}
