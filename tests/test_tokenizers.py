"""WordPiece tokenization inside TensorFlow."""

import tensorflow as tf

from trainer.data.tokenizers import WordPieceTokenizer


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
