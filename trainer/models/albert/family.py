"""The ALBERT family: SentencePiece, factorized embeddings, one shared block; Hugging Face `albert` weights."""

from trainer.models.albert import convert_hf
from trainer.models.albert.encoder import AlbertConfig, AlbertEncoder
from trainer.models.albert.tokenizer import SentencePieceTokenizer
from trainer.models.family import NativeFamily


class AlbertFamily(NativeFamily):
    name = "albert"
    architecture = AlbertConfig
    encoder_class = AlbertEncoder
    tokenizer_class = SentencePieceTokenizer
    # Its vocabulary is its SentencePiece model.
    vocab_file = convert_hf.SPIECE_FILE
    load_config = staticmethod(convert_hf.load_config)
    load_weights = staticmethod(convert_hf.load_weights)
