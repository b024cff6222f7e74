"""COPY with each row's snapshot_id sent in its line (engine.copy.copy_tagged): the same rows
as COPY with the column's DEFAULT, or nothing at all and the plain COPY's turn."""

from __future__ import annotations

import hashlib
from pathlib import Path

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from snapshots.engine import copy
from snapshots.engine.context import LoadContext
from snapshots.engine.copy import Tagged, copy_tagged
from snapshots.options import ImportOptions

TAG = b",42"


def tagged_whole(data: bytes) -> bytes:
    """Reference: the tag before every line end, decided on the whole input at once."""
    at = data.find(b"\n")
    crlf = at > 0 and data[at - 1:at] == b"\r"
    out = data.replace(b"\n", TAG + b"\n")
    if crlf:
        out = out.replace(b"\r" + TAG + b"\n", TAG + b"\r\n")
    if data and not data.endswith((b"\n", b"\r")):
        out += TAG
    return out


@given(st.lists(st.sampled_from([b"a", b",", b'"', b"\n", b"\r\n", b"\r", b"xyz"]),
                max_size=30).map(b"".join),
       st.lists(st.integers(min_value=1, max_value=7), max_size=10))
def test_chunks_are_tagged_as_the_whole_would_be(data: bytes, cuts: list[int]) -> None:
    """However the stream is cut: the tag before every line end, or Mismatch when a line's
    quotes do not pair up (a record would span it)."""
    if data.endswith(b"\r"):
        data += b"x"  # a bare \r at the very end is left to the plain COPY (tested below)
    tagged = Tagged(TAG, b'"')
    out, start = b"", 0
    try:
        for size in [*cuts, len(data)]:
            out += tagged.lines(data[start:start + size])
            start += size
        out += tagged.end(data[-1:] if data else b"\n")
    except Tagged.Mismatch:
        assert any(line.count(b'"') % 2 for line in data.split(b"\n"))
        return
    assert not any(line.count(b'"') % 2 for line in data.split(b"\n"))
    assert out == tagged_whole(data)


def load(conn: psycopg.Connection, tmp_path: Path, body: bytes) -> tuple[int | None, list]:
    conn.execute("DROP TABLE IF EXISTS tagged")
    conn.execute("CREATE TABLE tagged (id bigint, note text, snapshot_id bigint NOT NULL "
                 "DEFAULT current_setting('snapshots.import_id')::bigint)")
    path = tmp_path / "snapshot_20240101.csv"
    path.write_bytes(body)
    ctx = LoadContext(conn, "public", "tagged", ImportOptions())
    with conn.transaction():
        conn.execute("SELECT set_config('snapshots.import_id', '7', true)")
        rows = copy_tagged(ctx, path, ctx.relation, ["id", "note"],
                           hashlib.sha256(body).hexdigest(), 42)
        got = conn.execute("SELECT id, note, snapshot_id FROM tagged ORDER BY id").fetchall()
    return rows, got


def test_lines_that_are_records_load_tagged(db_conn: psycopg.Connection, tmp_path: Path) -> None:
    for body in (b'id,note\n1,a\n2,"b, c"\n', b'id,note\r\n1,a\r\n2,"b ""c"""\r\n',
                 b"id,note\n1,a\n2,b"):
        rows, got = load(db_conn, tmp_path, body)
        assert rows == 2, body
        assert [g[2] for g in got] == [42, 42], "the id came from the line, not the DEFAULT"
        assert [g[1] for g in got] == ["a", "b, c" if b", c" in body else
                                       'b "c"' if b'""' in body else "b"]


def test_a_record_over_two_lines_leaves_nothing_and_falls_back(db_conn: psycopg.Connection,
                                                               tmp_path: Path) -> None:
    rows, got = load(db_conn, tmp_path, b'id,note\n1,"two\nlines"\n2,b\n')
    assert rows is None
    assert got == []


def test_a_record_over_two_lines_past_the_quote_check_is_found_by_the_row_count(
        db_conn: psycopg.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(copy, "QUOTES_CHECKED", 0)  # as for a file whose first 1 MiB is plain
    rows, got = load(db_conn, tmp_path, b'id,note\n1,"two\nlines"\n2,b\n')
    assert rows is None
    assert got == []


def test_a_bad_value_leaves_nothing_and_falls_back(db_conn: psycopg.Connection,
                                                   tmp_path: Path) -> None:
    rows, got = load(db_conn, tmp_path, b"id,note\n1,a\nx,b\n")
    assert rows is None
    assert got == []


def test_first_imports_load_the_same_rows_either_way(db_url: str, db_conn: psycopg.Connection,
                                                     tmp_path: Path) -> None:
    """A table the import creates: tagged when the lines are the records, and loaded again
    without the tag when a record spans lines; the same rows and ids either way."""
    from snapshots.importer import Importer

    plain = tmp_path / "snapshot_20240101.csv"
    plain.write_bytes(b"id,note\n1,a\n2,b\n")
    spanning = tmp_path / "snapshot_20240102.csv"
    spanning.write_bytes(b'id,note\n3,"two\nlines"\n4,d\n')
    for path, table in ((plain, "first_plain"), (spanning, "first_spanning")):
        with Importer(db_url, table=table) as importer:
            result = importer.import_file(path)
        assert result.result == "imported", result.error
        got = db_conn.execute(f"SELECT note, snapshot_id FROM {table} ORDER BY id").fetchall()
        assert [g[1] for g in got] == [result.import_id] * 2
        assert [g[0] for g in got] == (["a", "b"] if path is plain else ["two\nlines", "d"])
