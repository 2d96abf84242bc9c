"""Property-based tests of the exported serving model, predict() and --mode=predict.

Whatever text arrives (any Unicode, invalid UTF-8, empty, 1 MB long, thousands at
once), serving never raises and every probability is finite and in [0, 1].
"""

import random
import subprocess

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the tokenizer ops of the SavedModel)

from trainer.serving import export as export_lib
from trainer.serving import predict as predict_lib

from conftest import PYTHON, REPO, SMOKE_CONFIG, check_ok, subprocess_env

MB = 1_000_000
# Pieces that stress the tokenizer: words it knows, markup, whitespace of every kind,
# invisible and control characters, emoji (with modifiers), other scripts, combining
# marks, the replacement character and the special tokens' spellings.
PIECES = [
    "great",
    "awful",
    "Wonderful!",
    " ",
    "\n",
    "\r\n",
    "\t",
    "\x0c",
    "\u2028",
    "\u00a0",
    "<br />",
    "<p>",
    "&nbsp;",
    "&amp;",
    "\u200b",
    "\u200d",
    "\ufeff",
    "\x00",
    "\x7f",
    "😀",
    "🎬",
    "👍🏽",
    "👨‍👩‍👧",
    "🇯🇵",
    "素晴らしい",
    "фильм",
    "فيلم",
    "हिन्दी",
    "Z̷̢",
    "\u0301",
    "\ufffd",
    "[CLS]",
    "[SEP]",
    "[PAD]",
    "[UNK]",
    "##s",
]
TEXTS = st.one_of(
    st.text(),  # Any code point but lone surrogates, control characters included.
    st.lists(st.sampled_from(PIECES), max_size=40).map("".join),
    st.text(alphabet=st.characters(min_codepoint=0x1F000, max_codepoint=0x1FAFF)),
)
# What a serving client may send: UTF-8 of any text, or bytes that are not UTF-8 at all.
INPUTS = st.one_of(TEXTS.map(lambda text: text.encode("utf-8")), st.binary(max_size=300))
SETTINGS = settings(
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def huge(piece: bytes, size: int = MB) -> bytes:
    return (piece * (size // len(piece) + 1))[:size]


@pytest.fixture(scope="module")
def export_path(trained_run) -> str:
    path = export_lib.latest_export(str(trained_run.model_dir / "export"))
    assert path is not None
    return path


@pytest.fixture(scope="module")
def serve(export_path):
    return tf.saved_model.load(export_path).signatures[export_lib.SIGNATURE]


def probabilities(serve, batch: list[bytes]) -> np.ndarray:
    result = serve(text=tf.constant(batch, dtype=tf.string))["probability"].numpy()
    assert result.dtype == np.float32
    assert result.shape in {(len(batch),), (len(batch), 1)}, result.shape
    result = result.reshape(len(batch))
    assert np.all(np.isfinite(result)), result
    assert np.all((result >= 0) & (result <= 1)), result
    return result


@settings(SETTINGS, max_examples=60)
@given(batch=st.lists(INPUTS, max_size=12))
def test_any_batch_of_texts_or_bytes_gives_probabilities(serve, batch):
    probabilities(serve, batch)


@settings(SETTINGS, max_examples=15)
@given(batch=st.lists(INPUTS, min_size=2, max_size=6))
def test_a_texts_probability_does_not_depend_on_its_batch(serve, batch):
    together = probabilities(serve, batch)
    alone = np.array([probabilities(serve, [text])[0] for text in batch])
    np.testing.assert_allclose(together, alone, atol=1e-4)


@settings(SETTINGS, max_examples=6)
@given(
    piece=st.one_of(st.sampled_from(PIECES).map(str.encode), st.binary(min_size=1, max_size=64)),
    neighbours=st.lists(INPUTS, max_size=3),
)
def test_a_1mb_text_is_served_like_any_other(serve, piece, neighbours):
    probabilities(serve, [huge(piece), *neighbours])


@pytest.mark.slow
def test_huge_texts_of_every_kind_in_one_batch(serve):
    batch = [huge(b"great film "), huge(b"x"), huge("😀".encode()), huge(b"<br />"), huge(b"\xff\xfe"), huge(b" ")]
    batch.append(bytes(random.Random(0).getrandbits(8) for _ in range(MB)))
    probabilities(serve, batch)


@settings(SETTINGS, max_examples=3)
@given(seed=st.integers(0, 2**32 - 1))
def test_a_batch_of_2000_mixed_texts(serve, seed):
    rng = random.Random(seed)
    batch = []
    for _ in range(2000):
        kind = rng.random()
        if kind < 0.1:
            batch.append(b"")
        elif kind < 0.2:
            batch.append(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 200))))
        else:
            batch.append("".join(rng.choice(PIECES) for _ in range(rng.randint(1, 300))).encode("utf-8"))
    result = probabilities(serve, batch)
    # Identical inputs get identical probabilities, wherever they sit in the batch.
    empty = result[[i for i, text in enumerate(batch) if text == b""]]
    np.testing.assert_allclose(empty, empty[0], atol=1e-5)


@pytest.mark.slow
@settings(SETTINGS, max_examples=5)
@given(texts=st.lists(TEXTS, max_size=150))
def test_predict_returns_one_probability_per_text(export_path, texts):
    result = predict_lib.predict(predict_lib.load(export_path), texts)["probability"]
    assert len(result) == len(texts)
    assert all(np.isfinite(p) and 0 <= p <= 1 for p in result), result


def test_predict_takes_empty_and_huge_strings(export_path):
    texts = ["", " ", "\n", "great " * (MB // 6), "😀" * (MB // 4), "a"]
    result = predict_lib.predict(predict_lib.load(export_path), texts, batch_size=4)["probability"]
    assert len(result) == len(texts) and all(0 <= p <= 1 for p in result)


def predict_command(model_dir, vocab_path, *flags) -> list:
    return [
        *PYTHON,
        "-m",
        "trainer.main",
        f"--config={SMOKE_CONFIG}",
        f"--config.model.vocab_path={vocab_path}",
        f"--model_dir={model_dir}",
        "--mode=predict",
        "--strategy=default",
        *flags,
    ]


def parse_output(stdout: str) -> list[tuple[str, float, str]]:
    rows = []
    for line in stdout.split("\n")[:-1]:
        label, probability, text = line.split("\t", 2)
        probability = float(probability)
        assert 0 <= probability <= 1
        assert label == ("positive" if probability >= 0.5 else "negative")
        rows.append((label, probability, text))
    return rows


def test_predict_mode_prints_one_line_per_text_of_an_odd_file(trained_run, tmp_path, vocab_path):
    lines = [
        b"Great fun, excellent acting!",
        b"",  # Blank lines are skipped.
        b"   \t",
        b"Caf\xe9 \xff\xfe invalid UTF-8",
        b"\x00\x01 control characters \x7f",
        "😀🎬 素晴らしい фильм فيلم".encode(),
        b"<br /><br />",
        b"crlf line ending\r",
        b"great " * (MB // 6),
        b"last line without a newline",
    ]
    input_file = tmp_path / "odd.txt"
    input_file.write_bytes(b"\n".join(lines))
    process = subprocess.run(
        predict_command(trained_run.model_dir, vocab_path, f"--input_file={input_file}", "--text=", "--text=😀"),
        env=subprocess_env(),
        cwd=REPO,
        capture_output=True,
        timeout=300,
    )
    process.stderr = process.stderr.decode("utf-8", "replace")
    check_ok(process)
    rows = parse_output(process.stdout.decode("utf-8"))
    expected = ["", "😀", *predict_lib.read_texts(str(input_file))]
    assert len(expected) == 10  # 2 flags + 8 non-blank lines
    assert [text for _, _, text in rows] == expected
    assert "Caf\ufffd \ufffd\ufffd invalid UTF-8" in expected


def test_predict_mode_takes_invalid_utf8_in_a_text_flag(trained_run, vocab_path):
    command = [arg.encode() for arg in predict_command(trained_run.model_dir, vocab_path)]
    process = subprocess.run(
        [*command, b"--text=Caf\xe9 \xff great"],
        env=subprocess_env(),
        cwd=REPO,
        capture_output=True,
        timeout=300,
    )
    assert process.returncode == 0, process.stderr.decode("utf-8", "replace")[-2000:]
    assert len(parse_output(process.stdout.decode("utf-8"))) == 1
