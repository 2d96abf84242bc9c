"""TFDS text datasets (imdb_reviews by default), downloaded and prepared by tensorflow-datasets.

An unreachable download host fails within seconds with what to download by
hand and which flag takes it, rather than after TFDS's retries.
"""

import socket
import urllib.parse

from absl import logging

from trainer.data.examples import DataError, Examples, TextReport, parse_label

IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"


def read_tfds(name: str, data_dir: str | None, seq_length: int) -> tuple[Examples, Examples | None]:
    import tensorflow_datasets as tfds  # Heavy import; only this source needs it.

    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
        if name == "imdb_reviews":
            _check_reachable(IMDB_URL, name, data_dir)
        logging.info("Downloading and preparing TFDS %s into %s.", name, builder.data_dir)
        try:
            builder.download_and_prepare()
        except Exception as e:  # TFDS raises many kinds; all mean "not available".
            raise DataError(_offline_message(name, data_dir, str(e))) from e
    report = TextReport(f"TFDS {name}", seq_length)
    rows: dict[str, list[tuple[str, str, int]]] = {}
    for split_name in ("train", "test"):
        if split_name in builder.info.splits:
            rows[split_name] = []
            for i, record in enumerate(tfds.as_numpy(builder.as_dataset(split=split_name))):
                text = report.decode(record["text"])
                if text is not None:
                    rows[split_name].append((f"{split_name}/{i}", text, parse_label(int(record["label"]), name)))
    report.log(" and ".join(f"{len(split_rows)} {split_name}" for split_name, split_rows in rows.items()) + " reviews")
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
