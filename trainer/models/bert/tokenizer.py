"""BERT's WordPiece tokenizer (also DistilBERT's): vocab.txt, lower-casing, [CLS] text [SEP]."""

import tensorflow as tf
import tensorflow_text as tf_text

from trainer.models.tokenizer import HEAD, Tokenizer, Truncation, VocabularyError


class WordPieceTokenizer(Tokenizer):
    """BERT WordPiece tokenization with tensorflow-text's FastBertTokenizer."""

    def __init__(self, vocab_path: str, seq_length: int, lower_case: bool = True, truncation: Truncation = HEAD):
        super().__init__("wordpiece_tokenizer", seq_length, truncation)
        with tf.io.gfile.GFile(vocab_path) as f:
            vocab = [line.rstrip("\n") for line in f]
        missing = [t for t in ("[CLS]", "[SEP]", "[UNK]", "[PAD]") if t not in vocab]
        if missing:
            raise VocabularyError(f"Vocabulary {vocab_path} lacks the special token(s) {missing}.")
        self.vocab_size = len(vocab)
        self._cls_id = vocab.index("[CLS]")
        self._sep_id = vocab.index("[SEP]")
        self._pad_id = vocab.index("[PAD]")
        self._tokenizer = tf_text.FastBertTokenizer(
            vocab=vocab, token_out_type=tf.int32, lower_case_nfd_strip_accents=lower_case
        )

    def _tokenize(self, texts: tf.Tensor) -> tf.RaggedTensor:
        return self._tokenizer.tokenize(texts)
