"""BERT's WordPiece tokenizer (also DistilBERT's): vocab.txt, lower-casing, [CLS] text [SEP]."""

import tensorflow as tf
import tensorflow_text as tf_text

from trainer.models.tokenizer import HEAD, Tokenizer, Truncation, VocabularyError, fingerprint_of

_SPECIAL_TOKENS = ("[CLS]", "[SEP]", "[UNK]", "[PAD]")


class WordPieceTokenizer(Tokenizer):
    """BERT WordPiece tokenization with tensorflow-text's FastBertTokenizer."""

    def __init__(self, vocab_path: str, seq_length: int, lower_case: bool = True, truncation: Truncation = HEAD):
        vocab = self.read_vocabulary(vocab_path, "WordPiece tokenizer")
        casing = "uncased" if lower_case else "cased"
        fingerprint = fingerprint_of(f"wordpiece-{casing}", "\n".join(vocab).encode())
        super().__init__("wordpiece_tokenizer", seq_length, truncation, fingerprint)
        self.vocab_size = len(vocab)
        self._cls_id = vocab.index("[CLS]")
        self._sep_id = vocab.index("[SEP]")
        self._pad_id = vocab.index("[PAD]")
        self._tokenizer = tf_text.FastBertTokenizer(
            vocab=vocab, token_out_type=tf.int32, lower_case_nfd_strip_accents=lower_case
        )

    @classmethod
    def read_vocabulary(cls, path: str, flag: str) -> list[str]:
        """The tokens of vocab.txt, one per line; raises VocabularyError unless it has the special tokens."""
        super().check_vocabulary(path, flag)
        try:
            with tf.io.gfile.GFile(path, "rb") as f:
                vocab = [line.decode("utf-8").rstrip("\n") for line in f]
        except UnicodeDecodeError:
            raise VocabularyError(f"{flag}: vocabulary {path} is not UTF-8 text (vocab.txt: a token a line).") from None
        missing = [token for token in _SPECIAL_TOKENS if token not in vocab]
        if missing:
            raise VocabularyError(f"{flag}: vocabulary {path} lacks the special token(s) {missing}.")
        return vocab

    @classmethod
    def check_vocabulary(cls, path: str, flag: str) -> None:
        cls.read_vocabulary(path, flag)

    def _tokenize(self, texts: tf.Tensor) -> tf.RaggedTensor:
        return self._tokenizer.tokenize(texts)
