"""Column type inference: the narrowest lossless PostgreSQL type of each column, from parsed
rows (TypeInference) or from the bytes as they stream into COPY (StreamInference).
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from snapshots.csvio.dialect import CsvOptions
from snapshots.csvio.encoding import split_lines
from snapshots.csvio.header import normalize_name
from snapshots.csvio.streams import MAX_RECORD_CARRY
from snapshots.errors import UsageError

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


class StreamInference:
    """Type inference over a file's bytes as they stream into COPY, fast enough to hide behind
    the server's own work.

    Each piece of text (starting at a record) is walked by ONE regex built from each
    column's current narrowest type; where its match ends is the start of the incomplete
    record carried to the next piece. Only when it stops at a complete record that does not
    fit (a new kind of value, quoted numbers, ...) are the records from there parsed with the
    csv module to narrow the types; that is rare, so the cost is about one regex pass over
    the bytes, every value still checked.
    """

    def __init__(self, width: int, options: CsvOptions, overrides: dict[int, str] | None = None,
                 *, skip_header: bool = True) -> None:
        self.options = options
        self.exact = TypeInference(width, dict(overrides or {}), null=options.null)
        self._decoder = codecs.getincrementaldecoder(options.python_encoding)("replace")
        self._carry = ""
        self._skip_header = skip_header and options.header
        self._started = False
        self._given_up = False
        self._finishing = False
        # The line regex for the current types, the types it was built for, and whether
        # every column is text by then (nothing left to check).
        self._pattern: tuple[tuple[object, ...], re.Pattern[str], bool] | None = None

    @property
    def width(self) -> int:
        return self.exact.width

    @property
    def _all_text(self) -> bool:
        return self._pattern is not None and self._pattern[2]

    # The stream -----------------------------------------------------------------

    def feed(self, chunk: bytes) -> None:
        # re holds the GIL for a whole match: small pieces let the COPY writer thread send
        # between them, so the server never waits for us.
        for start in range(0, len(chunk), FEED_PIECE):
            self._feed(chunk[start:start + FEED_PIECE])

    def _feed(self, chunk: bytes) -> None:
        if self._given_up or self._all_text:
            return
        self._records(self._carry + self._decoder.decode(chunk))

    def finish(self) -> None:
        if self._given_up or self._all_text:
            return
        tail = self._carry + self._decoder.decode(b"", final=True)
        self._carry = ""
        self._finishing = True
        if tail:
            self._records(tail if tail.endswith(("\n", "\r")) else tail + "\n")
        if self._carry and self._started:
            # What the regex could not take as records (a last line ending in a bare \r, an
            # unterminated quote): its values are still looked at, as the csv module reads
            # them (COPY reports the malformed ones).
            self._narrow(self._carry)
        self._carry = ""

    def widen(self, index: int, to: str = TEXT) -> None:
        self.exact.widen(index, to)

    def types(self) -> list[str]:
        return self.exact.types()

    def resume(self) -> StreamInference:
        """A check of the whole stream again that starts from the types this one settled.

        Every value is still checked against those types, and candidates are only ever
        dropped, so the verdict still fits every value; what is saved is narrowing the
        first records from "any type" again (the csv module's parse of them).
        """
        again = StreamInference(self.width, self.options, self.exact.overrides,
                                skip_header=self._skip_header)
        again.exact._candidates = [set(c) for c in self.exact._candidates]
        again.exact._seen_value = list(self.exact._seen_value)
        return again

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

    def _records(self, text: str) -> None:
        """Check the complete records at the start of `text` (which starts at a record);
        keep the incomplete one at its end for the next piece."""
        if not self._started:
            text = text.removeprefix("\ufeff")
            if not text:
                return  # the decoder holds a partial first character (or the BOM)
            if self._skip_header:
                end = self._first_record_end(text)
                if end == 0:
                    self._keep(text)  # the header is not complete yet
                    return
                text = text[end:]
            self._started = True
        # The one regex walks the records in C as far as they fit the current types; where
        # it stops is either the incomplete last record (the common case, so no separate
        # scan for the record boundary) or a record that needs a closer look.
        pattern = self._line_pattern()
        if self._all_text:
            self._carry = ""
            return
        end = pattern.match(text).end()  # type: ignore[union-attr]
        if end == len(text):
            self._carry = ""
            return
        rest = text[end:]
        cut = self._boundary(rest)
        if cut == 0:
            self._keep(rest)
            return
        self._carry = rest[cut:]
        self._narrow(rest[:cut])

    def _keep(self, text: str) -> None:
        if len(text) > MAX_RECORD_CARRY and not self._finishing:
            self._give_up()
        else:
            self._carry = text

    def _narrow(self, text: str) -> None:
        """Complete records, the first of which does not fit the current types: parse them
        with the csv module and narrow the candidates from their values."""
        rows = []
        try:
            for row in self.options.reader(split_lines(text)):
                if len(row) == self.width:  # wrong widths are COPY's to report
                    rows.append(row)
        except csv.Error:
            pass  # so is malformed CSV (an unterminated quote), with the line it is on
        self.exact.feed(rows)

    def _first_record_end(self, text: str) -> int:
        """Index just after the newline that ends the first record (0 if none yet)."""
        quote = self.options.quote
        start = 0
        while True:
            i = text.find("\n", start)
            if i < 0:
                return 0
            if text.count(quote, 0, i) % 2 == 0:
                return i + 1
            start = i + 1

    def _line_pattern(self) -> re.Pattern[str]:
        exact = self.exact
        key = tuple((frozenset(c), s) for c, s in
                    zip(exact._candidates, exact._seen_value, strict=True))
        if self._pattern is not None and key == self._pattern[0]:
            return self._pattern[1]
        q = re.escape(self.options.quote)
        d = re.escape(self.options.delimiter)
        null = re.escape(self.options.null)
        # Possessive runs, not one alternation per character: a text field costs a scan in
        # C, and a failed line fails at once instead of backtracking through its fields.
        text_field = rf"(?:{q}[^{q}]*+(?:{q}{q}[^{q}]*+)*+{q}|[^{d}{q}\r\n]*+)"
        fields = []
        all_text = True  # no column left whose type a value could still change
        for index, (candidates, seen) in enumerate(
                zip(exact._candidates, exact._seen_value, strict=True)):
            if index in exact.overrides or not candidates:
                fields.append(text_field)
                continue
            all_text = False
            if not seen:
                fields.append(f"(?:{null})")  # only NULLs so far: any value needs a look
            else:
                kind = next(t for t in TYPE_PRIORITY if t in candidates)
                fields.append(f"(?:{_FAST[kind]}|{null})")
        line = d.join(fields) + r"\r?\n"
        # Possessive: a record's extent is fixed, so giving lines back could never help,
        # and not keeping backtrack points for them measured ~10% faster. Every column
        # settled as text (all_text): nothing left that a value could change, so the rest
        # of the stream is not walked at all (a file of text columns costs no check).
        pattern = re.compile(f"(?:{line})*+")
        self._pattern = (key, pattern, all_text)
        return pattern

    def _give_up(self) -> None:
        """A record too long to hold: stop inferring; untyped columns become text."""
        self._given_up = True
        self._carry = ""
        for index in range(self.width):
            if index not in self.exact.overrides:
                self.exact.widen(index)
                self.exact._seen_value[index] = True
