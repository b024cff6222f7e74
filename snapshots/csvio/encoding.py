"""Text encodings: PostgreSQL's names and Python's codecs, refusing UTF-16 and UTF-32 by
their byte order mark, and decoding a byte stream into lines that name a bad byte's line.
"""

from __future__ import annotations

import codecs
import re
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from snapshots.csvio.names import is_gzip
from snapshots.csvio.streams import open_content
from snapshots.errors import InputError, UsageError

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


# Python codecs whose multi-byte characters may end in a byte of the ASCII range.
TWO_BYTE_ASCII = {"shift_jis", "cp932", "shift_jis_2004", "shift_jisx0213", "big5",
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
    check_start(start, path)


def check_start(start: bytes, path: Path) -> None:
    """check_byte_order_mark, given the content's first bytes."""
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


def split_lines(text: str) -> list[str]:
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
        lines = split_lines(text)
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
