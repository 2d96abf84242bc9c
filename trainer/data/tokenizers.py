"""Raw strings -> encoder inputs, as TensorFlow ops.

The same tokenizer object runs in the tf.data pipeline during training and
inside the exported serving graph, so training and serving cannot disagree.
Every kind maps a 1-D batch of strings to the BERT input dict:
`input_word_ids`, `input_mask`, `input_type_ids`, each int32 [batch, seq_length].
"""

import tensorflow as tf
import tensorflow_text as tf_text

from trainer.config import ConfigError
from trainer.models import hub_loading

# Reviews carry HTML line breaks ("<br />"); they are noise to the tokenizers.
_MARKUP = r"(?i)<br\s*/?>"
# [CLS] and [SEP] around one segment.
NUM_SPECIAL_TOKENS = 2


def clean_text(texts: tf.Tensor) -> tf.Tensor:
    return tf.strings.regex_replace(texts, _MARKUP, " ")


def truncate(token_ids: tf.RaggedTensor, max_tokens: int, truncation: str, head_fraction: float) -> tf.RaggedTensor:
    """Keeps at most `max_tokens` tokens of each row of [batch, (tokens)].

    `head` keeps the first tokens, `tail` the last ones, `head_tail` the first
    round(max_tokens * head_fraction) and the rest from the end. One gather
    serves all three: kept position j of a long row maps to j before the head
    budget and to j + (length - max_tokens) after it.
    """
    head = {"head": max_tokens, "tail": 0}.get(truncation, round(max_tokens * head_fraction))
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

    def __init__(self, name: str, seq_length: int, truncation: str = "head", head_fraction: float = 0.25):
        super().__init__(name=name)
        self.seq_length = seq_length
        self.truncation = truncation
        self.head_fraction = head_fraction
        self._cls_id = self._sep_id = self._pad_id = 0

    def _tokenize(self, texts: tf.Tensor) -> tf.RaggedTensor:
        raise NotImplementedError

    def _pack(self, token_ids: tf.RaggedTensor) -> dict[str, tf.Tensor]:
        ids, type_ids = tf_text.combine_segments([token_ids], self._cls_id, self._sep_id)
        word_ids, mask = tf_text.pad_model_inputs(ids, self.seq_length, pad_value=self._pad_id)
        type_ids, _ = tf_text.pad_model_inputs(type_ids, self.seq_length)
        return {"input_word_ids": word_ids, "input_mask": mask, "input_type_ids": type_ids}

    def __call__(self, texts: tf.Tensor) -> dict[str, tf.Tensor]:
        token_ids = self._tokenize(clean_text(texts))
        token_ids = truncate(token_ids, self.seq_length - NUM_SPECIAL_TOKENS, self.truncation, self.head_fraction)
        inputs = {key: tf.cast(value, tf.int32) for key, value in self._pack(token_ids).items()}
        # A static sequence length lets tf.distribute build well-formed empty batches
        # for idle replicas, and XLA compile once per length.
        return {key: tf.ensure_shape(value, [None, self.seq_length]) for key, value in inputs.items()}

    def lengths(self, texts: tf.Tensor) -> tf.Tensor:
        """Tokens each text occupies after truncation, with [CLS] and [SEP]: int32 [batch]."""
        num_tokens = self._tokenize(clean_text(texts)).row_lengths() + NUM_SPECIAL_TOKENS
        return tf.cast(tf.minimum(num_tokens, self.seq_length), tf.int32)


class WordPieceTokenizer(Tokenizer):
    """BERT WordPiece tokenization with tensorflow-text's FastBertTokenizer."""

    def __init__(
        self,
        vocab_path: str,
        seq_length: int,
        lower_case: bool = True,
        truncation: str = "head",
        head_fraction: float = 0.25,
    ):
        super().__init__("wordpiece_tokenizer", seq_length, truncation, head_fraction)
        with tf.io.gfile.GFile(vocab_path) as f:
            vocab = [line.rstrip("\n") for line in f]
        missing = [t for t in ("[CLS]", "[SEP]", "[UNK]", "[PAD]") if t not in vocab]
        if missing:
            raise ConfigError(f"Vocabulary {vocab_path} lacks the special token(s) {missing}.")
        self.vocab_size = len(vocab)
        self._cls_id = vocab.index("[CLS]")
        self._sep_id = vocab.index("[SEP]")
        self._pad_id = vocab.index("[PAD]")
        self._tokenizer = tf_text.FastBertTokenizer(
            vocab=vocab, token_out_type=tf.int32, lower_case_nfd_strip_accents=lower_case
        )

    def _tokenize(self, texts: tf.Tensor) -> tf.RaggedTensor:
        return self._tokenizer.tokenize(texts)


class HubPreprocessor(Tokenizer):
    """A TF Hub BERT or ALBERT preprocessing SavedModel (its `tokenize` and `bert_pack_inputs`).

    WordPiece preprocessors (bert_en_uncased_preprocess) tokenize to
    [batch, words, pieces], SentencePiece ones (albert_en_preprocess) to
    [batch, tokens]; `bert_pack_inputs` takes segments of the same rank.
    """

    def __init__(self, handle: str, seq_length: int, truncation: str = "head", head_fraction: float = 0.25):
        super().__init__("hub_preprocessor", seq_length, truncation, head_fraction)
        self._preprocessor = hub_loading.load(handle, "--config.model.hub_preprocessor")
        self._pieces_per_word = self._preprocessor.tokenize(tf.constant(["a"])).shape.rank == 3

    def _tokenize(self, texts: tf.Tensor) -> tf.RaggedTensor:
        tokens = self._preprocessor.tokenize(texts)
        return tokens.merge_dims(1, 2) if self._pieces_per_word else tokens

    def _pack(self, token_ids: tf.RaggedTensor) -> dict[str, tf.Tensor]:
        if self._pieces_per_word:  # Give each kept piece a word of its own.
            flat = token_ids.flat_values
            pieces = tf.RaggedTensor.from_row_lengths(flat, tf.ones_like(flat, tf.int64))
            token_ids = token_ids.with_flat_values(pieces)
        return self._preprocessor.bert_pack_inputs([token_ids], seq_length=self.seq_length)


class SentencePieceTokenizer(Tokenizer):
    """ALBERT tokenization: its SentencePiece model (spiece.model) with tensorflow-text's SentencepieceTokenizer."""

    _SPECIAL_PIECES = ("[CLS]", "[SEP]", "<pad>", "<unk>")

    def __init__(
        self,
        spiece_model_path: str,
        seq_length: int,
        lower_case: bool = True,
        truncation: str = "head",
        head_fraction: float = 0.25,
    ):
        super().__init__("sentencepiece_tokenizer", seq_length, truncation, head_fraction)
        with tf.io.gfile.GFile(spiece_model_path, "rb") as f:
            model = f.read()
        try:
            self._tokenizer = tf_text.SentencepieceTokenizer(model=model, out_type=tf.int32)
            ids = self._tokenizer.string_to_id(list(self._SPECIAL_PIECES))
        except tf.errors.OpError:
            raise ConfigError(f"{spiece_model_path} does not parse as a SentencePiece model (spiece.model).") from None
        # An unknown piece maps to <unk>'s id: a piece is present only if its id maps back to it.
        pieces = self._tokenizer.id_to_string(ids).numpy().astype(str).tolist()
        missing = [p for p, found in zip(self._SPECIAL_PIECES, pieces) if p != found]
        if missing:
            raise ConfigError(f"SentencePiece model {spiece_model_path} lacks the piece(s) {missing}.")
        self.vocab_size = int(self._tokenizer.vocab_size())
        self._cls_id, self._sep_id, self._pad_id, _ = (int(i) for i in ids)
        self.lower_case = lower_case

    def _tokenize(self, texts: tf.Tensor) -> tf.RaggedTensor:
        # What Hugging Face's AlbertTokenizer does before SentencePiece: `` and '' become ",
        # and (do_lower_case, with its default keep_accents=False) accents go and letters are lowered.
        texts = tf.strings.regex_replace(texts, "``|''", '"')
        if self.lower_case:
            texts = tf.strings.regex_replace(tf_text.normalize_utf8(texts, "NFKD"), r"\p{Mn}", "")
            texts = tf.strings.lower(texts, encoding="utf-8")
        return self._tokenizer.tokenize(texts)
