"""TFDS text datasets (imdb_reviews by default), downloaded and prepared by tensorflow-datasets.

An unreachable download host fails within seconds with what to download by
hand and which flag takes it, rather than after TFDS's retries.
"""

import socket
import urllib.parse

from absl import logging

from trainer.data.examples import DataError, Examples, TextReport

IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"


# The features of the text datasets this trainer knows by name: text, second text (pairs), label,
# and the TFDS split that serves as the test split (GLUE keeps its test labels hidden).
_FEATURES = {
    "imdb_reviews": ("text", "", "label", "test"),
    "yelp_polarity_reviews": ("text", "", "label", "test"),
    "ag_news_subset": ("description", "", "label", "test"),
    "glue/sst2": ("sentence", "", "label", "validation"),
    "glue/mrpc": ("sentence1", "sentence2", "label", "validation"),
    "glue/stsb": ("sentence1", "sentence2", "label", "validation"),
}


def read_tfds(
    name: str, data_dir: str | None, seq_length: int, columns: tuple[str, str, str] = ("text", "", "label")
) -> tuple[Examples, Examples | None]:
    """Train and test splits of TFDS `name`; features by the table above, else `columns` (text, pair, label).

    Class labels come as their names (imdb_reviews: neg, pos), other labels as numbers.
    """
    import tensorflow_datasets as tfds  # Heavy import; only this source needs it.

    text_feature, pair_feature, label_feature, test_split = _FEATURES.get(name, (*columns, "test"))
    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
        if name == "imdb_reviews":
            _check_reachable(IMDB_URL, name, data_dir)
        logging.info("Downloading and preparing TFDS %s into %s.", name, builder.data_dir)
        try:
            builder.download_and_prepare()
        except Exception as e:  # TFDS raises many kinds; all mean "not available".
            raise DataError(_offline_message(name, data_dir, str(e))) from e
    features = builder.info.features
    missing = [f for f in (text_feature, pair_feature, label_feature) if f and f not in features]
    if missing:
        raise DataError(
            f"TFDS {name} has no feature(s) {missing} (it has {sorted(features)}); set "
            "--config.data.text_column / text_pair_column / label_column."
        )
    class_names = getattr(features[label_feature], "names", None)
    report = TextReport(f"TFDS {name}", seq_length)
    rows: dict[str, list[tuple]] = {}
    for split_name, tfds_split in (("train", "train"), ("test", test_split)):
        try:
            dataset = builder.as_dataset(split=tfds_split)
        except (KeyError, ValueError):  # A dataset without this split.
            if split_name == "train":
                raise DataError(f"TFDS {name} has no train split.") from None
            continue
        rows[split_name] = []
        for i, record in enumerate(tfds.as_numpy(dataset)):
            texts = [report.decode(record[f]) for f in (text_feature, pair_feature) if f]
            label = record[label_feature].item()
            if class_names is not None and 0 <= label < len(class_names):
                label = class_names[label]
            if all(text is not None for text in texts):
                rows[split_name].append((f"{split_name}/{i}", *texts, label))
    report.log(" and ".join(f"{len(split_rows)} {split_name}" for split_name, split_rows in rows.items()) + " records")
    splits = [
        report.examples(rows[split_name], f"tfds:{name}/{split_name}") if split_name in rows else None
        for split_name in ("train", "test")
    ]
    return splits[0], splits[1]


def _check_reachable(url: str, name: str, data_dir: str | None, timeout: float = 5.0) -> None:
    """Fails within seconds, not after TFDS's retries, when the download host is unreachable."""
    parsed = urllib.parse.urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname, port), timeout=timeout).close()
    except OSError as e:
        raise DataError(_offline_message(name, data_dir, f"{parsed.hostname}:{port} unreachable: {e}")) from e


def _offline_message(name: str, data_dir: str | None, reason: str) -> str:
    return (
        f"TFDS dataset {name!r} is not prepared in --data_dir={data_dir or '~/tensorflow_datasets'} "
        f"and cannot be downloaded ({reason}). Either download {IMDB_URL} and pass it with "
        "--config.data.path=/path/to/aclImdb_v1.tar.gz (an extracted aclImdb directory works too), "
        "or prepare the TFDS dataset on a machine with internet and point --data_dir at it."
    )
