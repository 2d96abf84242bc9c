"""The DistilBERT family: BERT's WordPiece tokenizer, no token types, no pooler; Hugging Face `distilbert` weights."""

from trainer.models.bert.tokenizer import WordPieceTokenizer
from trainer.models.distilbert import convert_hf
from trainer.models.distilbert.encoder import DistilBertConfig, DistilBertEncoder
from trainer.models.family import NativeFamily


class DistilBertFamily(NativeFamily):
    name = "distilbert"
    architecture = DistilBertConfig
    encoder_class = DistilBertEncoder
    tokenizer_class = WordPieceTokenizer
    vocab_file = convert_hf.VOCAB_FILE
    load_config = staticmethod(convert_hf.load_config)
    load_weights = staticmethod(convert_hf.load_weights)
