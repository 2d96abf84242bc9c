"""The BERT family: WordPiece, post-LayerNorm blocks, a tanh pooler; Hugging Face `bert` weights."""

from trainer.models.bert import convert_hf
from trainer.models.bert.encoder import BertConfig, BertEncoder
from trainer.models.bert.tokenizer import WordPieceTokenizer
from trainer.models.family import NativeFamily

BertFamily = NativeFamily.define("bert", BertConfig, BertEncoder, WordPieceTokenizer, convert_hf.CONVERTER)
