"""ALBERT's SentencePiece tokenizer: spiece.model, with Hugging Face's AlbertTokenizer normalisation."""

import tensorflow as tf
import tensorflow_text as tf_text

from trainer.models.tokenizer import HEAD, Tokenizer, Truncation, VocabularyError, fingerprint_of


class SentencePieceTokenizer(Tokenizer):
    """ALBERT tokenization: its SentencePiece model (spiece.model) with tensorflow-text's SentencepieceTokenizer."""

    _SPECIAL_PIECES = ("[CLS]", "[SEP]", "<pad>", "<unk>")

    def __init__(self, spiece_model_path: str, seq_length: int, lower_case: bool = True, truncation: Truncation = HEAD):
        with tf.io.gfile.GFile(spiece_model_path, "rb") as f:
            model = f.read()
        casing = "uncased" if lower_case else "cased"
        super().__init__("sentencepiece_tokenizer", seq_length, truncation, fingerprint_of(f"spm-{casing}", model))
        try:
            self._tokenizer = tf_text.SentencepieceTokenizer(model=model, out_type=tf.int32)
            ids = self._tokenizer.string_to_id(list(self._SPECIAL_PIECES))
        except tf.errors.OpError:
            raise VocabularyError(
                f"{spiece_model_path} does not parse as a SentencePiece model (spiece.model)."
            ) from None
        # An unknown piece maps to <unk>'s id: a piece is present only if its id maps back to it.
        pieces = self._tokenizer.id_to_string(ids).numpy().astype(str).tolist()
        missing = [p for p, found in zip(self._SPECIAL_PIECES, pieces) if p != found]
        if missing:
            raise VocabularyError(f"SentencePiece model {spiece_model_path} lacks the piece(s) {missing}.")
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
