"""The ALBERT family: SentencePiece, factorized embeddings, one shared block; Hugging Face `albert` weights."""

from trainer.models.albert import convert_hf
from trainer.models.albert.encoder import AlbertConfig, AlbertEncoder
from trainer.models.albert.tokenizer import SentencePieceTokenizer
from trainer.models.family import NativeFamily

AlbertFamily = NativeFamily.define("albert", AlbertConfig, AlbertEncoder, SentencePieceTokenizer, convert_hf.CONVERTER)
