"""How a file's CSV is written (CsvOptions: delimiter, quote, null, encoding, header), and
detecting a file's delimiter when none is given.
"""

from __future__ import annotations

import codecs
import csv
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from snapshots.csvio.encoding import TWO_BYTE_ASCII, python_codec
from snapshots.csvio.streams import open_content
from snapshots.errors import InputError, UsageError


@dataclass(frozen=True)
class CsvOptions:
    delimiter: str = ","
    quote: str = '"'
    null: str = ""
    encoding: str = "UTF8"
    header: bool = True
    columns: tuple[str, ...] | None = None  # with header=False
    # No --delimiter was given: each file's own is detected (detect_dialect) before it loads.
    detect_delimiter: bool = False

    def __post_init__(self) -> None:
        for label, value in (("--delimiter", self.delimiter), ("--quote", self.quote)):
            if len(value) != 1 or value in "\r\n":
                raise UsageError(f"{label} must be one character other than a line break")
            if len(value.encode("utf-8")) != 1:
                raise UsageError(f"{label} must be a single-byte character, got {value!r}")
        if self.delimiter == self.quote:
            raise UsageError("--delimiter and --quote must differ")
        if any(c in self.null for c in "\r\n") or self.delimiter in self.null \
                or self.quote in self.null:
            raise UsageError("--null must not contain the delimiter, the quote or a line break")
        if not self.header and not self.columns:
            raise UsageError("--no-header needs --columns A,B,...")
        if self.header and self.columns:
            raise UsageError("--columns goes with --no-header")
        python_codec(self.encoding)  # validates the name

    @property
    def python_encoding(self) -> str:
        return python_codec(self.encoding)

    @property
    def quotes_bytewise(self) -> bool:
        """Whether quote, delimiter and line-break bytes can be found without decoding:
        true unless the encoding's second bytes may look like the quote (Shift-JIS, Big5,
        GBK and the like reuse 0x40-0x7E). Byte scans (cut points, stray quotes) need it."""
        quote, delimiter = self.quote.encode(), self.delimiter.encode()
        if len(quote) != 1 or len(delimiter) != 1:
            return False
        return quote[0] < 0x40 or codecs.lookup(self.python_encoding).name not in TWO_BYTE_ASCII

    def reader(self, lines: Iterable[str]) -> Iterator[list[str]]:
        return csv.reader(lines, delimiter=self.delimiter, quotechar=self.quote,
                          doublequote=True, strict=True)


# Detecting the delimiter: only when no --delimiter was given (CsvOptions.detect_delimiter).
DELIMITERS = ",;\t|"  # what detection chooses among (DuckDB's sniffer tries the same four)
SNIFF_RECORDS = 20  # the header and the first records: what a sniffer needs, and no more
SNIFF_BYTES = 64 << 10


def _is_tsv(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".tsv") or name.endswith(".tsv.gz")


def read_head(path: Path) -> bytes | None:
    """The first SNIFF_BYTES of the file's content (decompressed): what detection and a
    one-line header are read from; None when it cannot be read (the reads that follow say
    why)."""
    try:
        stream, _ = open_content(path)
        with stream:
            return stream.read(SNIFF_BYTES)
    except (OSError, EOFError, zlib.error):
        return None


def _sample(data: bytes, options: CsvOptions) -> str:
    """The file's first lines as text (BOM dropped), cut at a line end."""
    text = data.decode(options.python_encoding, "replace").removeprefix("\ufeff")
    lines = text.splitlines(keepends=True)
    if len(data) == SNIFF_BYTES and len(lines) > 1:
        lines.pop()  # cut short by the read
    return "".join(lines[:SNIFF_RECORDS])


def _fields(line: str, delimiter: str, quote: str) -> int:
    """How many fields the line holds with this delimiter."""
    return len(next(csv.reader([line], delimiter=delimiter, quotechar=quote), []))


def detect_dialect(path: Path, options: CsvOptions,
                   head: bytes | None = None) -> tuple[CsvOptions, str]:
    """The options with this file's delimiter, and what to say about it ("" when the
    delimiter was given, or is the comma a CSV file is expected to hold).

    A `.tsv` file is tab-delimited. Otherwise the standard library's csv.Sniffer reads the
    header and the first records (the delimiter whose count is the same on every line), and
    the header is the judge: a header that reads as one column under the chosen delimiter but
    splits under another is refused, never loaded as one text column. A header that splits
    under none is one column, read with `,`. `head`: the file's read_head, if read already.
    """
    if not options.detect_delimiter:
        return options, ""
    if _is_tsv(path):
        return replace(options, delimiter="\t", detect_delimiter=False), \
            "delimiter tab (a .tsv file)"
    head = head if head is not None else read_head(path)
    sample = _sample(head, options) if head is not None else ""
    if not any(d in sample for d in DELIMITERS if d != ","):
        # The sniffer only ever picks a delimiter the sample holds, and the header can only
        # split at one it holds: without the other three, sniff_delimiter's answer is the
        # comma, and sniffing costs more than the rest of a small file's checks together.
        chosen = ","
    else:
        chosen = sniff_delimiter(sample, options, path)
    # A comma is what a CSV file is expected to hold: only another delimiter is news.
    return replace(options, delimiter=chosen, detect_delimiter=False), \
        "" if chosen == "," else f"delimiter {_shown(chosen)} (detected)"


def sniff_delimiter(sample: str, options: CsvOptions, path: Path) -> str:
    """csv.Sniffer's delimiter for the sample, judged by its header line."""
    header = next(iter(sample.splitlines()), "")
    splits = [d for d in DELIMITERS if d != options.quote
              and _fields(header, d, options.quote) > 1]
    try:
        sniffed = csv.Sniffer().sniff(sample, delimiters=DELIMITERS).delimiter
    except csv.Error:  # no delimiter is the same on every line (or there is only one column)
        sniffed = None
    if not options.header:  # no header to judge by: the records say it, or it is `,`
        return sniffed if sniffed and sniffed in DELIMITERS and sniffed != options.quote else ","
    if sniffed in splits or (sniffed is None and len(splits) == 1):
        return sniffed or splits[0]
    if splits:
        shown = " or ".join(_shown(d) for d in splits)
        raise InputError(
            f"cannot tell the delimiter: the header reads as one column with "
            f"{_shown(sniffed or ',')}, but splits with {shown}; nothing written",
            file=path, line=1, hint=f"say which with --delimiter, e.g. --delimiter "
                                    f"'{_option(splits[0])}'")
    return ","  # one column: no delimiter in the header


def _shown(delimiter: str) -> str:
    return "tab" if delimiter == "\t" else repr(delimiter)


def _option(delimiter: str) -> str:
    return "\\t" if delimiter == "\t" else delimiter
