"""Everything about a snapshot file that needs no database.

File naming and snapshot dates, hashing, opening plain and gzipped files, reading and
normalising the header, and type inference. Pure functions and small classes: the importer
wires them to PostgreSQL.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import gzip
import hashlib
import io
import re
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO

from snapshots.errors import InputError, UsageError
from snapshots.filesig import FileSignature, file_signature

# A field may be as large as PostgreSQL allows (1 GB); the csv module stops at 128 KiB.
csv.field_size_limit(2**31 - 1)

CHUNK_SIZE = 1 << 20  # 1 MiB: big enough to amortise syscalls, small enough for flat memory
# Hashing reads bigger chunks: hashlib lets go of the GIL only inside update(), and a thread
# that hashes beside busy Python threads waits for the GIL once or twice per chunk.
HASH_CHUNK_SIZE = 8 << 20
MAX_COLUMNS = 1600  # PostgreSQL's limit on columns per table
MAX_IDENTIFIER_BYTES = 63  # NAMEDATALEN - 1
MAX_FIELD_BYTES = 1 << 30  # PostgreSQL's 1 GB limit per field

_DATE_RUN = re.compile(r"(?<!\d)(\d{8})(?!\d)")
# Letters and digits of any alphabet stay (`Größe` -> `größe`); anything else becomes `_`.
_NON_ALNUM = re.compile(r"[\W_]+")

# PostgreSQL encoding names (what the server converts from) to Python codecs (what we use to
# read the header and to validate values). The server does the real conversion.
_PG_TO_PYTHON = {
    "UTF8": "utf-8",
    "UTF-8": "utf-8",
    "LATIN1": "latin-1",
    "ISO88591": "latin-1",
    "LATIN2": "iso8859-2",
    "LATIN9": "iso8859-15",
    "WIN1250": "cp1250",
    "WIN1251": "cp1251",
    "WIN1252": "cp1252",
    "SQL_ASCII": "latin-1",
    "EUC_JP": "euc_jp",
    "SJIS": "shift_jis",
    "GBK": "gbk",
    "GB18030": "gb18030",
    "BIG5": "big5",
    "KOI8R": "koi8-r",
}


# --------------------------------------------------------------------------- naming


def snapshot_date(name: str) -> dt.date | None:
    """The first run of exactly 8 digits in the name that is a valid YYYYMMDD date."""
    for match in _DATE_RUN.finditer(name):
        digits = match.group(1)
        try:
            return dt.date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
        except ValueError:
            continue
    return None


def load_order(paths: Iterable[Path]) -> list[Path]:
    """Snapshot-date order, undated last, then by name: time must not run backwards."""

    def key(path: Path) -> tuple[int, dt.date, str]:
        day = snapshot_date(path.name)
        return (0, day, path.name) if day else (1, dt.date.min, path.name)

    return sorted(paths, key=key)


def is_snapshot_file(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".csv") or name.endswith(".csv.gz")


def is_gzip(path: Path) -> bool:
    return path.name.lower().endswith(".gz")


def expand_inputs(paths: Sequence[Path]) -> list[Path]:
    """Files stay as given; a directory becomes its *.csv and *.csv.gz files (not recursive).

    Raises UsageError for a path that is neither a readable file nor a directory.
    """
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = [p for p in path.iterdir() if p.is_file() and is_snapshot_file(p)
                     and not p.name.startswith(".")]
            files.extend(found)
        elif path.is_file():
            files.append(path)
        elif path.exists():
            raise UsageError(f"{path}: not a regular file or a directory")
        else:
            raise UsageError(f"{path}: no such file or directory")
    return load_order(files)


# --------------------------------------------------------------------------- bytes


class HashingReader(io.RawIOBase):
    """Wraps a binary file so every byte read through it is also hashed.

    A gzip file is hashed compressed (as stored) by putting this under GzipFile.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.sha256 = hashlib.sha256()
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = self._raw.readinto(buffer)  # type: ignore[attr-defined]
        if n:
            self.sha256.update(memoryview(buffer)[:n])
            self.bytes_read += n
        return n or 0

    def close(self) -> None:
        self._raw.close()
        super().close()


def sha256_file(path: Path, check: Callable[[], None] | None = None) -> tuple[str, int]:
    """Hex sha256 of the file's bytes as stored, and its size. This is where a file is hashed.

    `check` runs before each chunk (it raises to stop a read that is no longer wanted).
    """
    digest = hashlib.sha256()
    size = 0
    buf = bytearray(HASH_CHUNK_SIZE)  # one buffer for the whole read: no allocation per chunk
    view = memoryview(buf)
    with path.open("rb", buffering=0) as f:
        while n := f.readinto(buf):
            if check is not None:
                check()
            digest.update(view[:n])
            size += n
    return digest.hexdigest(), size


@dataclass(frozen=True)
class Hashed:
    """A file's hash, and its cut points for `parts` parts (None when one stream)."""

    path: Path
    sha256: str
    size: int
    signature: FileSignature  # taken before the read
    parts: int
    ranges: list[tuple[int, int]] | None


def hash_file(path: Path, options: CsvOptions, parts: Callable[[int], int],
              check: Callable[[], None] | None = None) -> Hashed:
    """Hash a file and, when `parts(size)` says it loads in several parts, find its cut
    points meanwhile.

    The two run side by side: hashlib lets go of the GIL while it hashes, the quote count
    behind the cut points holds it. On a thread of its own the count overlaps the hash
    instead of following it chunk by chunk, at the price of reading the first parts twice
    from the page cache (measured: a 214 MB file's parallel load starts 0.04 s sooner).
    """
    signature = file_signature(path)
    n = parts(signature.size)
    if n < 2:
        sha, size = sha256_file(path, check)
        return Hashed(path, sha, size, signature, n, None)
    from concurrent.futures import ThreadPoolExecutor  # here: `import` starts no sooner for it

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cut-points") as pool:
        cuts = pool.submit(split_records, path, n, options, check)
        sha, size = sha256_file(path, check)
        ranges = cuts.result()
    return Hashed(path, sha, size, signature, n, ranges)


def open_content(path: Path) -> tuple[BinaryIO, HashingReader]:
    """The file's content (decompressed for .gz) and the hashing reader under it."""
    raw = HashingReader(path.open("rb", buffering=0))
    if is_gzip(path):
        return gzip.GzipFile(fileobj=raw, mode="rb"), raw  # type: ignore[return-value]
    return io.BufferedReader(raw, CHUNK_SIZE), raw  # type: ignore[return-value]


class _SpanReader(io.RawIOBase):
    """The bytes [start, end) of a file, as a stream of their own."""

    def __init__(self, raw: BinaryIO, length: int) -> None:
        self._raw = raw
        self._left = length

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._left <= 0:
            return 0
        view = memoryview(buffer)[: self._left]
        n = self._raw.readinto(view) or 0  # type: ignore[attr-defined]
        self._left -= n
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


def open_span(path: Path, start: int, end: int) -> BinaryIO:
    """Bytes [start, end) of an uncompressed file (one part of a parallel load)."""
    raw = path.open("rb", buffering=0)
    raw.seek(start)
    return io.BufferedReader(_SpanReader(raw, end - start), CHUNK_SIZE)  # type: ignore[return-value]


class RecordSplitter:
    """Finds where to cut an uncompressed CSV file into `parts` byte ranges of about equal
    size, each starting at a record boundary (the header stays in the first). Fed the file's
    chunks in order.

    A line break ends a record when an even number of quote characters comes before it in
    the file: COPY's CSV parser toggles "inside quotes" on every quote character (a doubled
    quote toggles twice), so this is exactly where COPY itself sees a record end, quoted line
    breaks and badly quoted fields included. It counts quotes at C speed; it never parses a
    row.
    """

    def __init__(self, size: int, parts: int, options: CsvOptions) -> None:
        self.size = size
        self._targets = [size * k // parts for k in range(1, parts)]
        self._quote = options.quote.encode()
        self._bounds = [0]
        self._offset, self._odd, self._next = 0, False, 0

    @property
    def done(self) -> bool:
        return self._next >= len(self._targets)

    def feed(self, chunk: bytes) -> None:
        """The file's next bytes."""
        if self.done:
            return  # every cut is found: the rest of the file needs no counting
        targets, k = self._targets, self._next
        if k < len(targets) and targets[k] < self._offset + len(chunk):
            counted_to, parity, search = 0, self._odd, 0  # quote parity at chunk[counted_to]
            while k < len(targets):
                at = chunk.find(b"\n", max(search, targets[k] - self._offset))
                if at < 0:
                    break
                parity ^= bool(chunk.count(self._quote, counted_to, at) & 1)
                counted_to, search = at, at + 1
                if parity:
                    continue  # a line break inside a quoted field
                boundary = self._offset + at + 1
                if self._bounds[-1] < boundary < self.size:
                    self._bounds.append(boundary)
                k += 1
                while k < len(targets) and targets[k] < boundary:
                    k += 1
            self._next = k
        self._odd ^= bool(chunk.count(self._quote) & 1)
        self._offset += len(chunk)

    def ranges(self) -> list[tuple[int, int]]:
        return list(zip(self._bounds, [*self._bounds[1:], self.size], strict=True))


def split_records(path: Path, parts: int, options: CsvOptions,
                  check: Callable[[], None] | None = None) -> list[tuple[int, int]]:
    """`parts` byte ranges of the file, cut at record boundaries (see RecordSplitter). It
    reads only as far as the last cut. `check` runs before each chunk, as in sha256_file."""
    splitter = RecordSplitter(path.stat().st_size, parts, options)
    with path.open("rb", buffering=0) as f:
        while not splitter.done and (chunk := f.read(CHUNK_SIZE)):
            if check is not None:
                check()
            splitter.feed(chunk)
    return splitter.ranges()


def iter_chunks(stream: BinaryIO, size: int = CHUNK_SIZE) -> Iterator[bytes]:
    while chunk := stream.read(size):
        yield chunk


# --------------------------------------------------------------------------- dialect


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
        return quote[0] < 0x40 or codecs.lookup(self.python_encoding).name not in _TWO_BYTE_ASCII

    def reader(self, lines: Iterable[str]) -> Iterator[list[str]]:
        return csv.reader(lines, delimiter=self.delimiter, quotechar=self.quote,
                          doublequote=True, strict=True)


# A quote that RFC 4180 does not allow, and COPY reads anyway: COPY's CSV parser toggles
# "inside quotes" at every quote character wherever it stands, so `a""b` loads as `ab`,
# `a "b" c` as `a b c`, `"x"y` as `xy`, and an odd one joins the records after it.
MISPLACED_OPEN = "a quote inside an unquoted field"
MISPLACED_CLOSE = "text after the closing quote of a quoted field"
_UTF8_BOM = b"\xef\xbb\xbf"
_OUTSIDE, _INSIDE, _CLOSED = 0, 1, 2  # _CLOSED: the last byte fed closed a quoted field


@dataclass(frozen=True)
class MisplacedQuote:
    """Where the first misplaced quote is: its offset in the stream, and which rule it breaks."""

    offset: int
    reason: str


def _quote_grammar(options: CsvOptions) -> tuple[bytes, bytes, re.Pattern[bytes]] | None:
    """(quote, the bytes a well-placed quote may follow or precede, the pattern of
    well-placed quotes), or None when a byte-level check is not safe (see
    CsvOptions.quotes_bytewise)."""
    if not options.quotes_bytewise:
        return None
    quote, delimiter = options.quote.encode(), options.delimiter.encode()
    q, edge = re.escape(quote), re.escape(delimiter) + b"\r\n"
    # From outside a quoted field: unquoted stretches, each quoted field opening right after a
    # delimiter, a line break or a quote (the second half of a doubled quote) and closing
    # right before one. Possessive runs: the engine skips to each quote at C speed, and a
    # file without a misplaced quote is one match per chunk.
    grammar = re.compile(b"(?:[^" + q + b"]*+(?<![^" + edge + q + b"])" + q + b"[^" + q +
                         b"]*+" + q + b"(?![^" + edge + q + b"]))*+[^" + q + b"]*+")
    return quote, delimiter + b"\r\n" + quote, grammar


class StrayQuotes:
    """The first misplaced quote (RFC 4180) of a stream fed chunk by chunk, records from its
    start.

    A quoted field must open at a field's start (after a delimiter, a line break, or the
    stream's start) and close at its end; any other quote is misplaced. Which quotes open and
    which close is the running quote parity, exactly as COPY counts it, so the check needs
    only a little state between chunks, and most chunks are one regex match at C speed.
    """

    def __init__(self, options: CsvOptions, *, bom: bool = True) -> None:
        grammar = _quote_grammar(options)
        self.active = grammar is not None
        self._quote, self._allowed, self._grammar = grammar or (b"", b"", None)
        # Bytes of a UTF-8 BOM still to come (it may arrive over several chunks).
        self._bom = len(_UTF8_BOM) if bom and options.python_encoding.startswith("utf-8") else 0
        self._edge = b"\n"  # the byte before the next chunk: a stream starts a record
        self._state = _OUTSIDE
        self._offset = 0  # the stream offset of the next chunk

    def find(self, chunk: bytes) -> MisplacedQuote | None:
        """The first misplaced quote in `chunk` (or just before it), or None."""
        if self._grammar is None or not chunk:
            return None
        start = self._offset
        self._offset += len(chunk)
        if self._bom:  # the file's, not the first field's: a record starts after it
            expected = _UTF8_BOM[len(_UTF8_BOM) - self._bom:]
            if chunk.startswith(expected[:len(chunk)]):
                taken = min(len(chunk), len(expected))
                chunk, start, self._bom = chunk[taken:], start + taken, self._bom - taken
                if not chunk:
                    return None
            else:  # no BOM: what looked like its start is data (no quote in it)
                seen, self._bom = _UTF8_BOM[:len(_UTF8_BOM) - self._bom], 0
                self._edge = seen[-1:] or self._edge
        quote, state = self._quote, self._state
        edge, self._edge = self._edge, chunk[-1:]
        if state == _CLOSED and chunk[:1] not in self._allowed:
            return MisplacedQuote(start - 1, MISPLACED_CLOSE)
        if quote not in chunk:  # most chunks: no copy, no match
            if state != _INSIDE:
                self._state = _OUTSIDE
            return None
        pos = 0
        if state == _INSIDE:  # a quoted field from an earlier chunk: it closes here
            pos = chunk.index(quote) + 1
            if pos == len(chunk):
                self._state = _CLOSED
                return None
            if chunk[pos:pos + 1] not in self._allowed:
                return MisplacedQuote(start + pos - 1, MISPLACED_CLOSE)
        window = edge + chunk  # the byte before: what the first quote follows
        end = self._grammar.match(window, pos + 1).end()  # type: ignore[union-attr]
        if end == len(window):
            self._state = _CLOSED if window.endswith(quote) else _OUTSIDE
            return None
        # window[end] is a quote that opens a field; the match stopped at it because...
        if window[end - 1:end] not in self._allowed:  # ...it stands inside a field
            return MisplacedQuote(start + end - 1, MISPLACED_OPEN)
        close = window.find(quote, end + 1)
        if close < 0:  # ...its field goes on in the next chunk
            self._state = _INSIDE
            return None
        return MisplacedQuote(start + close - 1, MISPLACED_CLOSE)  # ...text follows its end


def misplaced_quote(record: bytes, options: CsvOptions) -> MisplacedQuote | None:
    """The first misplaced quote of one whole record (the line break, if any, included); a
    record's end is a field's end, so a quote closing the last field is well placed."""
    return StrayQuotes(options, bom=False).find(record)


def first_stray_quote(path: Path, options: CsvOptions, end: int,
                      check: Callable[[], None] | None = None) -> MisplacedQuote | None:
    """The first misplaced quote in the file's first `end` bytes (read as one stream reads
    them, from the file's start), or None."""
    stray = StrayQuotes(options)
    with open_span(path, 0, end) as stream:
        for chunk in iter_chunks(stream):
            if check is not None:
                check()
            found = stray.find(chunk)
            if found is not None:
                return found
    return None


def misplaced_quote_error(path: Path, options: CsvOptions, found: MisplacedQuote,
                          names: Sequence[str] = ()) -> InputError:
    """The one-line error for a misplaced quote: its physical line, the column it is in (by
    the header's name where there is one), its byte in that line, and the field as written.
    Reads the file up to the quote once more (the error path only)."""
    quote, delimiter = options.quote.encode(), options.delimiter.encode()
    bom = len(_UTF8_BOM) if options.python_encoding.startswith("utf-8") and \
        _read_range(path, 0, len(_UTF8_BOM)) == _UTF8_BOM else 0
    lines, parity, done = 1, 0, 0
    record_start = line_start = bom
    stream, _ = open_content(path)
    with stream:
        for chunk in iter_chunks(stream):
            part = chunk[:max(0, found.offset - done)]
            lines += part.count(b"\n") + part.count(b"\r") - part.count(b"\r\n")
            if part.endswith(b"\r") and chunk[len(part):len(part) + 1] == b"\n":
                lines -= 1  # a "\r\n" cut by the quote's own position: one line break
            last_break = max(part.rfind(b"\n"), part.rfind(b"\r"))
            if last_break >= 0:
                line_start = done + last_break + 1
            at = len(part)  # the record starts after the last line break outside quotes
            while (at := max(part.rfind(b"\n", 0, at), part.rfind(b"\r", 0, at))) >= 0:
                if not (parity + part.count(quote, 0, at)) & 1:
                    record_start = max(record_start, done + at + 1)
                    break
            parity = (parity + part.count(quote)) & 1
            done += len(chunk)
            if done > found.offset:
                break
    record = _read_range(path, record_start, found.offset + 256)
    at = found.offset - record_start
    # The field the quote is in: the delimiters outside quotes before it, from the record's
    # start, count the fields before it.
    index, inside, field_start = 0, False, 0
    for match in re.finditer(b"[" + re.escape(quote + delimiter) + b"]", record[:at]):
        if match.group() == quote:
            inside = not inside
        elif not inside:
            index, field_start = index + 1, match.end()
    rest = re.split(b"[" + re.escape(delimiter) + b"\r\n]", record[at + 1:], maxsplit=1)[0]
    column = names[index] if index < len(names) else str(index + 1)
    return InputError(
        f"malformed quoting: {found.reason} at byte {found.offset - line_start + 1} of the "
        "line (COPY would load it changed)", file=path, line=lines, column=column,
        value=(record[field_start:at + 1] + rest).decode(options.python_encoding, "replace"),
        hint='quote the whole field and double each quote inside it: "12"" pizza"')


def _read_range(path: Path, start: int, end: int) -> bytes:
    """Bytes [start, end) of the file's content (decompressed for .gz); the error path."""
    stream, _ = open_content(path)
    with stream:
        while start > 0 and (skipped := len(stream.read(min(start, CHUNK_SIZE)))):
            start, end = start - skipped, end - skipped
        return stream.read(max(0, end - start))


# Python codecs whose multi-byte characters may end in a byte of the ASCII range.
_TWO_BYTE_ASCII = {"shift_jis", "cp932", "shift_jis_2004", "shift_jisx0213", "big5",
                   "big5hkscs", "cp950", "gbk", "cp936", "gb18030", "cp949", "johab"}


# Encodings PostgreSQL cannot read as a client encoding: their line breaks and quotes are not
# single bytes, so COPY (and every byte scan here) would misread them.
_WIDE_CODECS = {"utf-16": "UTF-16", "utf-16-le": "UTF-16LE", "utf-16-be": "UTF-16BE",
                "utf-32": "UTF-32", "utf-32-le": "UTF-32LE", "utf-32-be": "UTF-32BE"}
# Longest first: a UTF-32LE mark starts with the UTF-16LE one.
_WIDE_BOMS = ((codecs.BOM_UTF32_LE, "UTF-32LE"), (codecs.BOM_UTF32_BE, "UTF-32BE"),
              (codecs.BOM_UTF16_LE, "UTF-16LE"), (codecs.BOM_UTF16_BE, "UTF-16BE"))


def _convert_hint(source: str, path: Path | None = None) -> str:
    name = path.name if path is not None else "FILE.csv"
    converted = name.split(".")[0] + "_utf8.csv"
    if path is not None and is_gzip(path):
        return f"convert it to UTF-8 first: zcat {name} | iconv -f {source} -t UTF-8 > {converted}"
    return f"convert it to UTF-8 first: iconv -f {source} -t UTF-8 {name} > {converted}"


def python_codec(pg_encoding: str) -> str:
    key = pg_encoding.upper().replace("-", "").replace("_", "")
    for name, codec in _PG_TO_PYTHON.items():
        if name.replace("_", "").replace("-", "") == key:
            return codec
    try:
        codec = codecs.lookup(pg_encoding).name
    except LookupError:
        raise UsageError(f"--encoding {pg_encoding!r} is not an encoding PostgreSQL and "
                         "snapshots both know", hint="try UTF8, LATIN1 or WIN1252") from None
    if codec in _WIDE_CODECS:
        raise UsageError(f"--encoding {pg_encoding}: PostgreSQL has no {_WIDE_CODECS[codec]} "
                         "client encoding, so it cannot load such a file",
                         hint=_convert_hint(_WIDE_CODECS[codec]))
    return codec


def check_byte_order_mark(path: Path) -> None:
    """Refuse a UTF-16 or UTF-32 file by its byte order mark, before any of it is decoded as
    the bytes of a one-byte encoding (it would fail on its second byte, with no clue why)."""
    stream, _ = open_content(path)
    with stream:
        try:
            start = stream.read(4)
        except (OSError, EOFError, zlib.error):
            return  # the reads that follow report it
    for mark, name in _WIDE_BOMS:
        if start.startswith(mark):
            raise InputError(f"the file is {name} (it starts with a {name} byte order mark), "
                             "and PostgreSQL reads no UTF-16 or UTF-32", file=path, line=1,
                             hint=_convert_hint(name[:6], path))  # iconv reads the mark
    # No mark, but ASCII text with a NUL byte beside every character: UTF-16 all the same.
    if len(start) == 4 and start[1] == start[3] == 0 and start[0] and start[2]:
        name = "UTF-16LE"
    elif len(start) == 4 and start[0] == start[2] == 0 and start[1] and start[3]:
        name = "UTF-16BE"
    else:
        return
    raise InputError(f"the file looks like {name} without a byte order mark (a NUL byte beside "
                     "every character), and PostgreSQL reads no UTF-16", file=path, line=1,
                     hint=_convert_hint(name, path))


# str.splitlines() also breaks at these, but for CSV (and COPY) they are data.
_NOT_LINE_BREAKS = re.compile("[\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
_LINE_BREAK = re.compile(r"(?<=\n)|(?<=\r)(?!\n)")


def _split_lines(text: str) -> list[str]:
    """Lines with their ends kept, broken only at \\n, \\r\\n and a lone \\r."""
    if _NOT_LINE_BREAKS.search(text):
        lines = _LINE_BREAK.split(text)
        if lines and not lines[-1]:
            lines.pop()
        return lines
    return text.splitlines(keepends=True)


def decoded_lines(chunks: Iterable[bytes], encoding: str, *, file: str,
                  errors: str = "strict") -> Iterator[str]:
    """Text lines (ends kept) from byte chunks; invalid bytes name the line they are on."""
    decoder = codecs.getincrementaldecoder(encoding)(errors)
    shown = pg_encoding_name(encoding)
    carry = ""
    line_no = 1
    for chunk in chunks:
        try:
            text = carry + decoder.decode(chunk)
        except UnicodeDecodeError as exc:
            prefix = chunk[: exc.start]
            raise InputError(f"invalid byte sequence for encoding {shown}",
                             file=file, line=line_no + carry.count("\n") + prefix.count(b"\n"),
                             value="0x" + chunk[exc.start: exc.end].hex()) from None
        lines = _split_lines(text)
        # An unfinished last line waits for the next chunk; so does a last line ending in
        # "\r", whose "\n" may start the next chunk (else csv would see an extra blank record).
        carry = lines.pop() if lines and not lines[-1].endswith("\n") else ""
        line_no += len(lines)
        yield from lines
    try:
        carry += decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise InputError(f"invalid byte sequence for encoding {shown} at the end of the file",
                         file=file, line=line_no) from None
    if carry:
        yield carry


def pg_encoding_name(codec: str) -> str:
    """PostgreSQL's name for a Python codec, for messages (`utf-8-sig` is UTF8)."""
    if codec in ("utf-8", "utf-8-sig"):
        return "UTF8"
    for name, known in _PG_TO_PYTHON.items():
        if known == codec:
            return name
    return codec


# --------------------------------------------------------------------------- header


def normalize_name(name: str) -> str:
    """`Store Name` -> `store_name`: trimmed, lower-cased, non-alphanumerics become `_`."""
    return _NON_ALNUM.sub("_", name.strip().lower())


@dataclass(frozen=True)
class Header:
    raw: tuple[str, ...]  # as written in the file
    names: tuple[str, ...]  # normalised: the table's column names


def check_names(raw: Sequence[str], *, file: str, line: int | None = 1) -> Header:
    """Normalise header names; empty, colliding and over-long names are errors."""
    if not raw:
        raise InputError("the header line is empty", file=file, line=line,
                         hint="a snapshot starts with a line of column names")
    if len(raw) > MAX_COLUMNS:
        raise InputError(f"{len(raw)} columns, more than PostgreSQL's limit of {MAX_COLUMNS}",
                         file=file, line=line)
    names: list[str] = []
    seen: dict[str, str] = {}
    for position, original in enumerate(raw, start=1):
        if "\x00" in original:
            raise InputError("NUL byte in the header", file=file, line=line)
        name = normalize_name(original)
        if not name.strip("_"):
            raise InputError(f"column {position} has an empty name", file=file, line=line,
                             value=original)
        if len(name.encode("utf-8")) > MAX_IDENTIFIER_BYTES:
            raise InputError(f"column name longer than {MAX_IDENTIFIER_BYTES} bytes",
                             file=file, line=line, value=original)
        if name == "snapshot_id":
            raise InputError("column name snapshot_id is reserved for the ledger reference",
                             file=file, line=line, value=original)
        if name in seen:
            if seen[name] == original:
                raise InputError("duplicate column name", file=file, line=line, value=name)
            raise InputError(f"column names {seen[name]!r} and {original!r} both become "
                             f"{name!r}", file=file, line=line,
                             hint="rename one of them in the header")
        seen[name] = original
        names.append(name)
    return Header(raw=tuple(raw), names=tuple(names))


def read_header(path: Path, options: CsvOptions) -> Header:
    """The file's header (or --columns), checked. Reads only the first record."""
    file = str(path)
    check_byte_order_mark(path)
    if not options.header:
        assert options.columns is not None
        return check_names(options.columns, file=file, line=None)
    stream, _ = open_content(path)
    with stream:
        try:
            first = stream.readline(64 * 1024)
            blank = not first.strip()
            if blank and stream.read(64 * 1024).strip():
                raise InputError("the first line is blank: it must be the header", file=file,
                                 line=1)
        except (OSError, EOFError) as exc:
            raise InputError(f"cannot read the file: {exc}", file=file) from None
        if blank:
            raise InputError("empty file: no header line", file=file, line=1,
                             hint="a snapshot needs at least a header line")
        # Line by line, so that bytes after the header (a bad row for --on-error skip, say)
        # are not decoded here. \n never occurs inside a multi-byte character in the
        # supported encodings.
        rest = iter(lambda: stream.readline(CHUNK_SIZE), b"")
        chunks = _chain_first(first, rest)
        encoding = options.python_encoding
        if encoding == "utf-8":
            encoding = "utf-8-sig"  # a BOM belongs to the file, not to the first column name
        try:
            record = next(options.reader(decoded_lines(chunks, encoding, file=file)))
        except csv.Error as exc:
            raise InputError(f"malformed header: {exc}", file=file, line=1) from None
        except StopIteration:
            raise InputError("empty file: no header line", file=file, line=1) from None
    return check_names(record, file=file)


def _chain_first(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


# --------------------------------------------------------------------------- dialect detection

DELIMITERS = ",;\t|"  # what detection chooses among (DuckDB's sniffer tries the same four)
SNIFF_RECORDS = 20  # the header and the first records: what a sniffer needs, and no more
SNIFF_BYTES = 64 << 10


def _is_tsv(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".tsv") or name.endswith(".tsv.gz")


def _sample(path: Path, options: CsvOptions) -> str:
    """The file's first lines as text (BOM dropped), cut at a line end."""
    stream, _ = open_content(path)
    with stream:
        data = stream.read(SNIFF_BYTES)
    text = data.decode(options.python_encoding, "replace").removeprefix("\ufeff")
    lines = text.splitlines(keepends=True)
    if len(data) == SNIFF_BYTES and len(lines) > 1:
        lines.pop()  # cut short by the read
    return "".join(lines[:SNIFF_RECORDS])


def _fields(line: str, delimiter: str, quote: str) -> int:
    """How many fields the line holds with this delimiter."""
    return len(next(csv.reader([line], delimiter=delimiter, quotechar=quote), []))


def detect_dialect(path: Path, options: CsvOptions) -> tuple[CsvOptions, str]:
    """The options with this file's delimiter, and what to say about it ("" when the
    delimiter was given, or is the comma a CSV file is expected to hold).

    A `.tsv` file is tab-delimited. Otherwise the standard library's csv.Sniffer reads the
    header and the first records (the delimiter whose count is the same on every line), and
    the header is the judge: a header that reads as one column under the chosen delimiter but
    splits under another is refused, never loaded as one text column. A header that splits
    under none is one column, read with `,`.
    """
    if not options.detect_delimiter:
        return options, ""
    if _is_tsv(path):
        return replace(options, delimiter="\t", detect_delimiter=False), \
            "delimiter tab (a .tsv file)"
    try:
        sample = _sample(path, options)
    except (OSError, EOFError, zlib.error):
        sample = ""  # the reads that follow report it
    header = next(iter(sample.splitlines()), "")
    splits = [d for d in DELIMITERS if d != options.quote
              and _fields(header, d, options.quote) > 1]
    try:
        sniffed = csv.Sniffer().sniff(sample, delimiters=DELIMITERS).delimiter
    except csv.Error:  # no delimiter is the same on every line (or there is only one column)
        sniffed = None
    if not options.header:  # no header to judge by: the records say it, or it is `,`
        chosen = sniffed if sniffed in DELIMITERS and sniffed != options.quote else ","
    elif sniffed in splits or (sniffed is None and len(splits) == 1):
        chosen = sniffed or splits[0]
    elif splits:
        shown = " or ".join(_shown(d) for d in splits)
        raise InputError(
            f"cannot tell the delimiter: the header reads as one column with "
            f"{_shown(sniffed or ',')}, but splits with {shown}; nothing written",
            file=path, line=1, hint=f"say which with --delimiter, e.g. --delimiter "
                                    f"'{_option(splits[0])}'")
    else:
        chosen = ","  # one column: no delimiter in the header
    # A comma is what a CSV file is expected to hold: only another delimiter is news.
    return replace(options, delimiter=chosen, detect_delimiter=False), \
        "" if chosen == "," else f"delimiter {_shown(chosen)} (detected)"


def _shown(delimiter: str) -> str:
    return "tab" if delimiter == "\t" else repr(delimiter)


def _option(delimiter: str) -> str:
    return "\\t" if delimiter == "\t" else delimiter


# --------------------------------------------------------------------------- types

BIGINT, NUMERIC, BOOLEAN, DATE, TIMESTAMP, TIMESTAMPTZ, TEXT = (
    "bigint", "numeric", "boolean", "date", "timestamp", "timestamptz", "text")

# Most specific first: the first candidate still standing is the column's type.
TYPE_PRIORITY = (BIGINT, NUMERIC, BOOLEAN, DATE, TIMESTAMP, TIMESTAMPTZ)

# Only forms PostgreSQL stores and prints back exactly: no leading zeros, no explicit '+',
# no exponent, no '-0', ISO dates only (locale-style dates stay text).
_INT = r"(?:0|-?[1-9][0-9]{0,18})"
_DEC = r"(?:-?(?:0|[1-9][0-9]*)\.[0-9]+)"
_DATE = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
_TIME = r"[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?"
_OFFSET = r"(?:Z|[+-][0-9]{2}(?::?[0-9]{2})?)"
_PATTERNS = {
    BIGINT: _INT,
    NUMERIC: rf"(?:0|-?[1-9][0-9]*|{_DEC})",  # integers of any length: numeric is exact
    BOOLEAN: r"(?:true|false)",
    DATE: _DATE,
    TIMESTAMP: rf"{_DATE}[ T]{_TIME}",
    TIMESTAMPTZ: rf"{_DATE}[ T]{_TIME}{_OFFSET}",
}
_SINGLE = {t: re.compile(p) for t, p in _PATTERNS.items()}
# One regex call over a whole column batch joined by newlines keeps the work in C.
_MANY = {t: re.compile(rf"(?:{p}\n)*{p}") for t, p in _PATTERNS.items()}
_NEGATIVE_ZERO = re.compile(r"-0(?:\.0+)?")
_NEGATIVE_ZERO_LINE = re.compile(r"^-0(?:\.0+)?$", re.M)
_LONG_INT = re.compile(r"^-?[0-9]{19}$", re.M)


def _value_fits(kind: str, value: str) -> bool:
    if not _SINGLE[kind].fullmatch(value):
        return False
    if kind in (BIGINT, NUMERIC) and _NEGATIVE_ZERO.fullmatch(value):
        return False
    if kind == BIGINT and len(value.lstrip("-")) == 19:
        return -(2**63) <= int(value) < 2**63
    if kind in (DATE, TIMESTAMP, TIMESTAMPTZ):
        return _valid_datetime(kind, value)
    return True


def _valid_datetime(kind: str, value: str) -> bool:
    try:
        if kind == DATE:
            dt.date.fromisoformat(value)
        else:
            text = value.replace("Z", "+00:00") if value.endswith("Z") else value
            parsed = dt.datetime.fromisoformat(text)
            if kind == TIMESTAMPTZ and parsed.tzinfo is None:
                return False
            offset = parsed.utcoffset()
            if offset is not None and abs(offset) >= dt.timedelta(hours=16):
                return False  # PostgreSQL's "time zone displacement out of range"
    except ValueError:
        return False
    return True


@dataclass
class TypeInference:
    """Narrowest lossless type per column, refined batch by batch (widening only).

    An unquoted empty field is NULL and says nothing about the type. Python's csv module (3.11)
    cannot tell `""` from an empty field; the importer catches the rare `""` in a typed column
    when COPY rejects it and widens that column to text.
    """

    width: int
    overrides: dict[int, str] = field(default_factory=dict)
    null: str = ""
    _candidates: list[set[str]] = field(init=False)
    _seen_value: list[bool] = field(init=False)

    def __post_init__(self) -> None:
        self._candidates = [set(TYPE_PRIORITY) for _ in range(self.width)]
        self._seen_value = [False] * self.width
        for index in self.overrides:
            self._candidates[index] = set()

    def feed(self, rows: Sequence[Sequence[str]]) -> None:
        if not rows:
            return
        for index, column in enumerate(zip(*rows, strict=False)):
            candidates = self._candidates[index]
            if not candidates:
                continue
            distinct = set(column)
            distinct.discard(self.null)
            if not distinct:
                continue
            values = list(distinct)
            self._seen_value[index] = True
            for kind in list(candidates):
                if not self._all_fit(kind, values):
                    candidates.discard(kind)

    def widen(self, index: int, to: str = TEXT) -> None:
        """Forget candidates narrower than `to` (used when the server rejects a value)."""
        if to == TEXT:
            self._candidates[index] = set()
        else:
            order = list(TYPE_PRIORITY)
            self._candidates[index] &= set(order[order.index(to):])

    def _all_fit(self, kind: str, values: list[str]) -> bool:
        joined = "\n".join(values)
        if joined.count("\n") == len(values) - 1 and _MANY[kind].fullmatch(joined):
            # Whole-batch regexes find the rare values that need a closer look.
            if kind == BIGINT and _LONG_INT.search(joined):
                return all(_value_fits(kind, v) for v in values if len(v) >= 19)
            if kind == NUMERIC:
                return not _NEGATIVE_ZERO_LINE.search(joined)
            if kind in (DATE, TIMESTAMP, TIMESTAMPTZ):
                return all(_valid_datetime(kind, v) for v in values)
            return True
        if joined.count("\n") != len(values) - 1:
            return all(_value_fits(kind, v) for v in values)
        return False

    def types(self) -> list[str]:
        result = []
        for index, candidates in enumerate(self._candidates):
            if index in self.overrides:
                result.append(self.overrides[index])
            elif not self._seen_value[index]:
                result.append(TEXT)
            else:
                result.append(next((t for t in TYPE_PRIORITY if t in candidates), TEXT))
        return result


def parse_type_overrides(specs: Sequence[str]) -> dict[str, str]:
    """`--type COL=TYPE` pairs, keyed by normalised column name."""
    result: dict[str, str] = {}
    for spec in specs:
        column, sep, kind = spec.partition("=")
        if not sep or not column.strip() or not kind.strip():
            raise UsageError(f"--type {spec!r}: expected COL=TYPE, e.g. --type user_id=bigint")
        result[normalize_name(column)] = kind.strip()
    return result


def widen_type(current: str) -> str:
    """The next wider type when a value does not fit (schema evolution `add`)."""
    base = current.lower()
    if base in ("smallint", "integer", "bigint", "int2", "int4", "int8"):
        return NUMERIC
    return TEXT


# Fast shapes for the stream check below. They may accept a little more than the exact
# lossless check (e.g. 2023-02-30); COPY rejects those and the importer widens the column.
_FAST_DATE = r"[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
_FAST_TS = _FAST_DATE + r"[ T](?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?"
_FAST = {
    BIGINT: r"0|-?[1-9][0-9]{0,17}",  # 19 digits may overflow: the exact path decides
    NUMERIC: r"-?[1-9][0-9]*(?:\.[0-9]+)?|0(?:\.[0-9]+)?|-0\.[0-9]*[1-9][0-9]*",
    BOOLEAN: r"true|false",
    DATE: _FAST_DATE,
    TIMESTAMP: _FAST_TS,
    TIMESTAMPTZ: _FAST_TS + _OFFSET,
}
FEED_PIECE = 128 << 10
MAX_RECORD_CARRY = 64 << 20  # a record longer than this ends inference: its columns stay text


class StreamInference:
    """Type inference over a file's bytes as they stream into COPY, fast enough to hide behind
    the server's own work.

    Text is cut at record boundaries (a newline preceded by an even number of quotes), and a
    whole block of records is checked by ONE regex built from each column's current narrowest
    type. Only a block that does not match (a new kind of value, quoted numbers, ...) is parsed
    with the csv module to narrow the types; that is rare, so the cost is about one regex pass
    over the bytes.
    """

    def __init__(self, width: int, options: CsvOptions, overrides: dict[int, str] | None = None,
                 *, skip_header: bool = True) -> None:
        self.width = width
        self.options = options
        self.exact = TypeInference(width, dict(overrides or {}), null=options.null)
        self._decoder = codecs.getincrementaldecoder(options.python_encoding)("replace")
        self._carry = ""
        self._skip_header = skip_header and options.header
        self._started = False
        self._given_up = False
        self._pattern: re.Pattern[str] | None = None
        self._pattern_key: tuple[object, ...] | None = None

    # The stream -----------------------------------------------------------------

    def feed(self, chunk: bytes) -> None:
        # re holds the GIL for a whole match: small pieces let the COPY writer thread send
        # between them, so the server never waits for us.
        for start in range(0, len(chunk), FEED_PIECE):
            self._feed(chunk[start:start + FEED_PIECE])

    def _feed(self, chunk: bytes) -> None:
        if self._given_up:
            return
        text = self._carry + self._decoder.decode(chunk)
        cut = self._boundary(text)
        if cut == 0 and len(text) > MAX_RECORD_CARRY:
            self._give_up()
            return
        self._carry = text[cut:]
        self._block(text[:cut])

    def finish(self) -> None:
        if self._given_up:
            return
        tail = self._carry + self._decoder.decode(b"", final=True)
        self._carry = ""
        if tail:
            self._block(tail if tail.endswith(("\n", "\r")) else tail + "\n")

    def widen(self, index: int, to: str = TEXT) -> None:
        self.exact.widen(index, to)

    def types(self) -> list[str]:
        return self.exact.types()

    # Blocks ---------------------------------------------------------------------

    def _boundary(self, text: str) -> int:
        """Index just after the last newline that ends a record (0 if none)."""
        quote = self.options.quote
        end = len(text)
        while True:
            i = text.rfind("\n", 0, end)
            if i < 0:
                return 0
            if text.count(quote, 0, i) % 2 == 0:
                return i + 1
            end = i

    def _block(self, text: str) -> None:
        if not self._started:
            self._started = True
            text = text.removeprefix("\ufeff")
            if self._skip_header:
                text = text[self._first_record_end(text):]
        if not text:
            return
        if self._line_pattern().fullmatch(text):
            return
        rows = []
        try:
            for row in self.options.reader(_split_lines(text)):
                if len(row) == self.width:  # wrong widths are COPY's to report
                    rows.append(row)
        except csv.Error:
            pass  # so is malformed CSV (an unterminated quote), with the line it is on
        self.exact.feed(rows)

    def _first_record_end(self, text: str) -> int:
        quote = self.options.quote
        start = 0
        while True:
            i = text.find("\n", start)
            if i < 0:
                return len(text)
            if text.count(quote, 0, i) % 2 == 0:
                return i + 1
            start = i + 1

    def _line_pattern(self) -> re.Pattern[str]:
        exact = self.exact
        key = tuple((frozenset(c), s) for c, s in
                    zip(exact._candidates, exact._seen_value, strict=True))
        if self._pattern is not None and key == self._pattern_key:
            return self._pattern
        q = re.escape(self.options.quote)
        d = re.escape(self.options.delimiter)
        null = re.escape(self.options.null)
        text_field = rf"(?:{q}(?:[^{q}]|{q}{q})*{q}|[^{d}{q}\r\n]*)"
        fields = []
        for index, (candidates, seen) in enumerate(
                zip(exact._candidates, exact._seen_value, strict=True)):
            if index in exact.overrides or not candidates:
                fields.append(text_field)
            elif not seen:
                fields.append(f"(?:{null})")  # only NULLs so far: any value needs a look
            else:
                kind = next(t for t in TYPE_PRIORITY if t in candidates)
                fields.append(f"(?:{_FAST[kind]}|{null})")
        line = d.join(fields) + r"\r?\n"
        self._pattern = re.compile(f"(?:{line})*")
        self._pattern_key = key
        return self._pattern

    def _give_up(self) -> None:
        """A record too long to hold: stop inferring; untyped columns become text."""
        self._given_up = True
        self._carry = ""
        for index in range(self.width):
            if index not in self.exact.overrides:
                self.exact.widen(index)
                self.exact._seen_value[index] = True


def first_malformed_record(path: Path, options: CsvOptions,
                           span: tuple[int, int] | None = None,
                           check: Callable[[], None] | None = None) -> int | None:
    """The line where the first badly quoted record starts, or None when all are fine.

    PostgreSQL's COPY reads a quote inside an unquoted field (`12" pizza`) as the start of a
    quoted section and silently joins records until the next quote. The importer calls this
    only where StrayQuotes cannot read bytes (see CsvOptions.quotes_bytewise), and only when
    COPY's row count differs from the file's line count, which well-formed files without line
    breaks inside fields never do. `span`: look only at those bytes (one part of
    a parallel load); the line returned is still the file's. `check` runs before each chunk
    (it raises to stop a scan that is no longer wanted).
    """
    if span is not None:
        with open_span(path, *span) as stream:
            found = _first_malformed(stream, options, bom=span[0] == 0, check=check)
        return None if found is None else lines_before(path, span[0], options) + found
    stream, _ = open_content(path)
    with stream:
        return _first_malformed(stream, options, bom=True, check=check)


def _first_malformed(stream: BinaryIO, options: CsvOptions, *, bom: bool,
                     check: Callable[[], None] | None) -> int | None:
    q, d = re.escape(options.quote), re.escape(options.delimiter)
    # Possessive runs and one match over as many well-formed records as a chunk holds: the
    # regex engine walks the text at C speed instead of Python looping once per record.
    field = rf"(?:{q}(?:[^{q}]++|{q}{q})*+{q}|[^{d}{q}\r\n]*+)"
    records = re.compile(rf"(?:{field}(?:{d}{field})*+(?:\r\n|\n|\r))*+")
    decoder = codecs.getincrementaldecoder(options.python_encoding)("replace")
    text, line, started = "", 1, not bom
    chunks = iter_chunks(stream)
    finished = False
    while not finished:
        if check is not None:
            check()
        chunk = next(chunks, None)
        if chunk is None:
            finished = True
            text += decoder.decode(b"", final=True)
            if text and not text.endswith(("\n", "\r")):
                text += "\n"
        else:
            text += decoder.decode(chunk)
        if not started:
            text, started = text.removeprefix("\ufeff"), True
        # A "\r" at the end of a chunk may be the first half of a "\r\n": leave it for later.
        stop = len(text) - 1 if not finished and text.endswith("\r") else len(text)
        end = records.match(text, 0, stop).end()  # type: ignore[union-attr]  # matches ""
        # Lines as lines_before counts them: broken at \n, \r\n and a lone \r.
        line += text.count("\n", 0, end) + text.count("\r", 0, end) - \
            text.count("\r\n", 0, end)
        text = text[end:]
        if text and (finished or len(text) > MAX_RECORD_CARRY):
            return line  # a record no quoting rule explains, or one that never ends
    return None


def lines_before(path: Path, offset: int, options: CsvOptions) -> int:
    """Physical lines in the first `offset` bytes (which end with a line break)."""
    with open_span(path, 0, offset) as stream:
        return sum(1 for _ in decoded_lines(iter_chunks(stream), options.python_encoding,
                                            file=str(path), errors="replace"))
