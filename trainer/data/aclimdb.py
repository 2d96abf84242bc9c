"""The Large Movie Review Dataset in its original layout: an aclImdb/ directory or a tar archive of it.

Reviews are aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt; the label is
the polarity (pos = 1) or the rating in the file name (1-4 and 7-10 stars),
as `label_source` says. Files outside
this layout (editor backups, .DS_Store, macOS ._ files) are ignored and
counted; the rest of the original archive (README, vocabularies, unsup/) is
ignored silently. A truncated archive, an unreadable file or the same review
twice stops the run naming the file or member.
"""

import bz2
import gzip
import lzma
import os
import re
import tarfile
import zlib

from trainer.data import examples
from trainer.data.examples import DataError, Examples, TextReport

# A review: aclImdb/{train,test}/{pos,neg}/<name>.txt, hidden files (macOS "._0_9.txt") excepted.
_ACLIMDB_FILE = re.compile(r"(?:^|/)aclImdb/(train|test)/(pos|neg)/([^/.][^/]*)\.txt$")
# The rest of the original archive: not reviews with a label, but not stray either.
_ACLIMDB_EXTRA = re.compile(
    r"(?:^|/)aclImdb/(?:README|imdb\.vocab|imdbEr\.txt|"
    r"(?:train|test)/(?:labeledBow\.feat|unsupBow\.feat|urls_(?:pos|neg|unsup)\.txt|unsup/[^/]+\.txt))$"
)
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
# A review's file name stem: <id>_<rating>.
_RATED_STEM = re.compile(r"^[^_]+_(\d+)$")


def read_aclimdb(path: str, seq_length: int, label_source: str = "polarity") -> tuple[Examples, Examples | None]:
    """Reads aclImdb/{train,test}/{pos,neg}/*.txt from a directory or a tar archive."""
    report = TextReport(path, seq_length)
    rows: dict[str, list[tuple[str, str, int]]] = {"train": [], "test": []}
    found: dict[str, str] = {}  # example id -> file or member name
    for name, match, data in _aclimdb_files(path, report):
        split_name, polarity, stem = match.groups()
        example_id = f"{split_name}/{polarity}/{stem}"
        if example_id in found:
            raise DataError(
                f"--config.data.path={path}: {found[example_id]} and {name} are both review {example_id}; "
                "remove one of them."
            )
        found[example_id] = name
        text = report.decode(data)
        if text is not None:
            rows[split_name].append((example_id, text, _label(polarity, stem, label_source, name)))
    if not any(example_id.startswith("train/") for example_id in found):
        raise DataError(
            f"--config.data.path={path}: no aclImdb/train/pos/*.txt or aclImdb/train/neg/*.txt files; "
            "expected the layout of the original aclImdb_v1.tar.gz archive."
        )
    for split_rows in rows.values():
        split_rows.sort()
    report.log(f"{len(rows['train'])} train and {len(rows['test'])} test reviews")
    train = report.examples(rows["train"], f"{path} (train)")
    has_test = any(example_id.startswith("test/") for example_id in found)
    test = report.examples(rows["test"], f"{path} (test)") if has_test else None
    return train, test


def _label(polarity: str, stem: str, label_source: str, name: str) -> int:
    if label_source == "polarity":
        return int(polarity == "pos")
    rated = _RATED_STEM.match(stem)
    if rated is None:
        raise DataError(
            f"{name}: no rating in the file name (expected <id>_<rating>.txt), which "
            "--config.data.label_source=rating reads."
        )
    return int(rated.group(1))


def _aclimdb_files(path: str, report: TextReport):
    """Yields (file or member name, name match, contents) for each review of a directory or
    tar archive; counts the stray files."""
    if os.path.isdir(path):
        yield from _aclimdb_directory_files(path, report)
        return
    last = None  # The last member read: where a truncated archive broke off.
    try:
        with tarfile.open(path, "r:*") as archive:
            for member in archive:
                match = _ACLIMDB_FILE.search(member.name)
                if match and member.isfile():
                    if member.size > examples.MAX_REVIEW_BYTES:
                        raise DataError(_too_large(f"{path}: member {member.name}", member.size))
                    yield member.name, match, archive.extractfile(member).read()
                elif not member.isdir() and not _ACLIMDB_EXTRA.search(member.name):
                    report.stray += 1
                last = member.name
            _check_archive_end(archive)
    except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError) as e:
        where = f"after member {last}" if last else "at its start"
        raise DataError(
            f"--config.data.path={path}: not a readable tar archive (truncated or corrupt {where}: {e})."
        ) from e


def _aclimdb_directory_files(path: str, report: TextReport):
    root = os.path.abspath(path)
    # Either the aclImdb directory itself or its parent; of a parent, only aclImdb/ is read.
    if os.path.isdir(os.path.join(root, "aclImdb")):
        root = os.path.join(root, "aclImdb")

    def unreadable(error: OSError):
        raise DataError(f"--config.data.path={path}: cannot read {error.filename} ({error.strerror}).")

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable):
        dirnames.sort()
        for filename in sorted(filenames):
            full = os.path.join(dirpath, filename)
            name = "aclImdb/" + os.path.relpath(full, root).replace(os.sep, "/")
            match = _ACLIMDB_FILE.search(name)
            if match:
                yield full, match, _read_file(full)
            elif not _ACLIMDB_EXTRA.search(name):
                report.stray += 1


def _read_file(path: str) -> bytes:
    try:
        size = os.path.getsize(path)
        if size > examples.MAX_REVIEW_BYTES:
            raise DataError(_too_large(path, size))
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read it ({e.strerror or e}).") from e


def _too_large(where: str, size: int) -> str:
    return (
        f"{where} is {size / 2**20:.0f} MiB; a review is at most {examples.MAX_REVIEW_BYTES >> 20} MiB. "
        "Remove it or move it out of the data."
    )


def _check_archive_end(archive: tarfile.TarFile) -> None:
    """Raises if the archive stops short of its end-of-archive marker.

    tarfile ends its iteration quietly when the data stops at a member
    boundary, so a truncated archive would pass for a smaller one.
    """
    fileobj = archive.fileobj
    # The read that ended the iteration must have been a whole block (the marker's zeros).
    if fileobj.tell() != archive.offset + tarfile.BLOCKSIZE:
        raise tarfile.ReadError("unexpected end of data")
    if isinstance(fileobj, (gzip.GzipFile, bz2.BZ2File, lzma.LZMAFile)):
        # Reading to the end makes the decompressor check the stream's end and checksum.
        while fileobj.read(1 << 20):
            pass
    else:
        fileobj.seek(archive.offset)
        if fileobj.read(tarfile.BLOCKSIZE) != bytes(tarfile.BLOCKSIZE):
            raise tarfile.ReadError("no end-of-archive marker where the members end")
