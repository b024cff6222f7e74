"""Quoting checks: the quotes RFC 4180 does not allow and COPY reads anyway, found in the
bytes on their way into COPY (StrayQuotes) or, where bytes cannot tell, by a scan after
COPY (first_malformed_record); and the one-line error that points at one.
"""

from __future__ import annotations

import codecs
import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from snapshots.csvio.dialect import CsvOptions
from snapshots.csvio.encoding import decoded_lines
from snapshots.csvio.streams import (
    CHUNK_SIZE,
    MAX_RECORD_CARRY,
    iter_chunks,
    open_content,
    open_span,
)
from snapshots.errors import InputError

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


def quote_parity(data: bytes, quote: bytes) -> bytes:
    """What is left of each line of `data` once every byte but quotes and line feeds is
    deleted, then every pair of quotes: one quote on a line whose count of quotes is odd
    (a quoted field going on past its end), nothing on the others. Two passes in C: a regex
    over the lines cost a 200-row file a fifth of a millisecond."""
    return data.translate(None, _not_quote_or_lf(quote)).replace(quote + quote, b"")


def quotes_span_lines(data: bytes, quote: bytes) -> bool:
    """Whether a line of `data` holds an odd number of quotes."""
    return quote in quote_parity(data, quote)


@functools.lru_cache(maxsize=8)
def _not_quote_or_lf(quote: bytes) -> bytes:
    return bytes(b for b in range(256) if b not in (quote[0], 0x0A))


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
