"""A TF Hub preprocessing model as a tokenizer: its own vocabulary, our truncation."""

import tensorflow as tf

from trainer.models.hub import loading
from trainer.models.tokenizer import HEAD, Tokenizer, Truncation


class HubPreprocessor(Tokenizer):
    """A TF Hub BERT or ALBERT preprocessing SavedModel (its `tokenize` and `bert_pack_inputs`).

    WordPiece preprocessors (bert_en_uncased_preprocess) tokenize to
    [batch, words, pieces], SentencePiece ones (albert_en_preprocess) to
    [batch, tokens]; `bert_pack_inputs` takes segments of the same rank.
    """

    def __init__(self, handle: str, seq_length: int, truncation: Truncation = HEAD):
        super().__init__("hub_preprocessor", seq_length, truncation, fingerprint=f"hub:{handle}")
        self._preprocessor = loading.load(handle, "--config.model.hub_preprocessor")
        self._pieces_per_word = self._preprocessor.tokenize(tf.constant(["a"])).shape.rank == 3

    def _tokenize(self, texts: tf.Tensor) -> tf.RaggedTensor:
        tokens = self._preprocessor.tokenize(texts)
        return tokens.merge_dims(1, 2) if self._pieces_per_word else tokens

    def _pack(self, segments: list[tf.RaggedTensor]) -> dict[str, tf.Tensor]:
        if self._pieces_per_word:  # Give each kept piece a word of its own.
            segments = [
                segment.with_flat_values(
                    tf.RaggedTensor.from_row_lengths(segment.flat_values, tf.ones_like(segment.flat_values, tf.int64))
                )
                for segment in segments
            ]
        return self._preprocessor.bert_pack_inputs(segments, seq_length=self.seq_length)
