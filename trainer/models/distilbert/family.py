"""The DistilBERT family: BERT's WordPiece, no token types, no pooler; Hugging Face `distilbert` weights."""

from trainer.models.bert.tokenizer import WordPieceTokenizer
from trainer.models.distilbert import convert_hf
from trainer.models.distilbert.encoder import DistilBertConfig, DistilBertEncoder
from trainer.models.family import NativeFamily

DistilBertFamily = NativeFamily.define(
    "distilbert", DistilBertConfig, DistilBertEncoder, WordPieceTokenizer, convert_hf.CONVERTER
)
