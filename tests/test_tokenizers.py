"""WordPiece tokenization inside TensorFlow."""

import pytest
import tensorflow as tf

from trainer.models.bert.tokenizer import WordPieceTokenizer
from trainer.models.tokenizer import Truncation


def vocab_ids(vocab_path: str) -> dict[str, int]:
    with open(vocab_path) as f:
        return {token.rstrip("\n"): i for i, token in enumerate(f)}


def test_packs_cls_text_sep_and_pads(vocab_path):
    ids = vocab_ids(vocab_path)
    tokenizer = WordPieceTokenizer(vocab_path, seq_length=8)
    out = tokenizer(tf.constant(["Great film", "The MOVIE was boring!"]))
    assert set(out) == {"input_word_ids", "input_mask", "input_type_ids"}
    for value in out.values():
        assert value.dtype == tf.int32 and value.shape == (2, 8)
    expected_first = [ids["[CLS]"], ids["great"], ids["film"], ids["[SEP]"]] + [ids["[PAD]"]] * 4
    assert out["input_word_ids"][0].numpy().tolist() == expected_first
    assert out["input_mask"][0].numpy().tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    # Lower-cased; punctuation split off.
    second = out["input_word_ids"][1].numpy().tolist()
    assert second[:7] == [ids["[CLS]"], ids["the"], ids["movie"], ids["was"], ids["boring"], ids["!"], ids["[SEP]"]]
    assert not out["input_type_ids"].numpy().any()


def test_truncates_long_text_keeping_its_head(vocab_path):
    ids = vocab_ids(vocab_path)
    tokenizer = WordPieceTokenizer(vocab_path, seq_length=6)
    out = tokenizer(tf.constant(["good bad awful dull weak mess fun"]))["input_word_ids"].numpy()[0].tolist()
    assert out == [ids["[CLS]"], ids["good"], ids["bad"], ids["awful"], ids["dull"], ids["[SEP]"]]


def test_html_line_breaks_are_removed(vocab_path):
    tokenizer = WordPieceTokenizer(vocab_path, seq_length=12)
    with_markup = tokenizer(tf.constant(["great<br />film<br/><BR>fun"]))
    plain = tokenizer(tf.constant(["great film fun"]))
    assert with_markup["input_word_ids"].numpy().tolist() == plain["input_word_ids"].numpy().tolist()


def test_unknown_words_map_to_unk(vocab_path):
    ids = vocab_ids(vocab_path)
    tokenizer = WordPieceTokenizer(vocab_path, seq_length=5)
    out = tokenizer(tf.constant(["zyxwv"]))["input_word_ids"].numpy()[0].tolist()
    assert out[:3] == [ids["[CLS]"], ids["[UNK]"], ids["[SEP]"]]


WORDS = ["good", "bad", "awful", "dull", "weak", "mess", "fun", "great", "love"]


def kept_words(vocab_path: str, truncation: str, text: str, seq_length: int = 8, head_fraction: float = 0.5):
    words = {i: token for token, i in vocab_ids(vocab_path).items()}
    tokenizer = WordPieceTokenizer(vocab_path, seq_length, truncation=Truncation(truncation, head_fraction))
    out = tokenizer(tf.constant([text]))
    return [words[i] for i, keep in zip(out["input_word_ids"][0].numpy(), out["input_mask"][0].numpy()) if keep]


@pytest.mark.slow
def test_truncation_strategies_keep_head_tail_or_both_ends(vocab_path):
    text = " ".join(WORDS)  # 9 tokens; 6 fit between [CLS] and [SEP]
    assert kept_words(vocab_path, "head", text)[1:-1] == WORDS[:6]
    assert kept_words(vocab_path, "tail", text)[1:-1] == WORDS[-6:]
    assert kept_words(vocab_path, "head_tail", text)[1:-1] == WORDS[:3] + WORDS[-3:]
    assert kept_words(vocab_path, "head_tail", text, head_fraction=1 / 6)[1:-1] == WORDS[:1] + WORDS[-5:]


def test_short_texts_are_not_truncated_by_any_strategy(vocab_path):
    for truncation in ("head", "tail", "head_tail"):
        assert kept_words(vocab_path, truncation, "good bad fun") == ["[CLS]", "good", "bad", "fun", "[SEP]"]


def test_lengths_count_special_tokens_and_cap_at_seq_length(vocab_path):
    tokenizer = WordPieceTokenizer(vocab_path, seq_length=8)
    texts = tf.constant(["", "great", "good bad<br />fun", " ".join(WORDS)])
    assert tokenizer.lengths(texts).numpy().tolist() == [2, 3, 5, 8]
    masks = tokenizer(texts)["input_mask"].numpy().sum(axis=1).tolist()
    assert masks == [2, 3, 5, 8]
