"""The BERT family: WordPiece, post-LayerNorm blocks, a tanh pooler; Hugging Face `bert` weights."""

from trainer.models.bert import convert_hf
from trainer.models.bert.encoder import BertConfig, BertEncoder
from trainer.models.bert.tokenizer import WordPieceTokenizer
from trainer.models.family import NativeFamily


class BertFamily(NativeFamily):
    name = "bert"
    architecture = BertConfig
    encoder_class = BertEncoder
    tokenizer_class = WordPieceTokenizer
    vocab_file = convert_hf.VOCAB_FILE
    load_config = staticmethod(convert_hf.load_config)
    load_weights = staticmethod(convert_hf.load_weights)
