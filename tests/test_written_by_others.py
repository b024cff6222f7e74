"""CSV as other tools write it (issue 13): Excel, European locales, tab-separated exports, UTF-16
"Unicode text", and the edge cases of public CSV test corpora. Each file is written here byte
for byte the way those tools write it; the real CLI loads it, or refuses it with one line and
nothing written, and a dry run says exactly what the import then does.
"""

from __future__ import annotations

import codecs
from pathlib import Path

import psycopg
import pytest
from test_bad_input import (
    error_line,
    fails_cleanly,
    import_,
    located,
    records,
    relations,
    snapshot_state,
    write,
)


def columns(conn: psycopg.Connection, table: str = "snapshots") -> dict[str, str]:
    return dict(conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = %s "
        "AND column_name <> 'snapshot_id' ORDER BY ordinal_position", (table,)).fetchall())


def errors(result: object) -> list[str]:
    """The `error:` lines (a warning about a name without a date may come before them)."""
    assert "Traceback" not in result.stderr  # type: ignore[attr-defined]
    return [line for line in result.stderr.splitlines()  # type: ignore[attr-defined]
            if line.startswith("error:")]


def out_line(result: object) -> str:
    lines = result.stdout.splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 1, lines
    return lines[0]


# --------------------------------------------------------------------------- the delimiter

SEED = "user_id{d}name{d}store_name{d}credit_limit\n1{d}Jake{d}Best Berlin Burgers{d}10000.1\n" \
       "2{d}Mostafa{d}Express Espresso{d}500.002\n"


@pytest.mark.parametrize(("name", "delimiter", "said"), [
    pytest.param("snapshot_20230101.csv", ";", "delimiter ';' (detected)", id="semicolon"),
    pytest.param("snapshot_20230101.csv", "\t", "delimiter tab (detected)", id="tab-in-csv"),
    pytest.param("snapshot_20230101.csv", "|", "delimiter '|' (detected)", id="pipe"),
    pytest.param("snapshot_20230101.tsv", "\t", "delimiter tab (a .tsv file)", id="tsv"),
    pytest.param("snapshot_20230101.csv", ",", "", id="comma-the-expected-one-goes-unsaid"),
])
def test_the_delimiter_is_detected_and_said(tmp_path: Path, cli_env: dict[str, str],
                                            db_url: str, db_conn: psycopg.Connection,
                                            name: str, delimiter: str, said: str) -> None:
    """Without --delimiter a first import no longer makes one text column of a `;` file."""
    path = write(tmp_path, name, SEED.format(d=delimiter).encode())
    dry = import_(cli_env, db_url, "--dry-run", path)
    assert dry.returncode == 0, dry.stderr
    assert said in out_line(dry)
    result = import_(cli_env, db_url, path)
    assert result.returncode == 0, result.stderr
    assert said in out_line(result)
    if not said:
        assert "delimiter" not in result.stdout + dry.stdout
    assert columns(db_conn) == {"user_id": "bigint", "name": "text", "store_name": "text",
                                "credit_limit": "numeric"}
    assert db_conn.execute("SELECT name, credit_limit::text FROM snapshots ORDER BY user_id"
                           ).fetchall() == [("Jake", "10000.1"), ("Mostafa", "500.002")]


def test_a_european_export_with_decimal_commas(tmp_path: Path, cli_env: dict[str, str],
                                               db_url: str, db_conn: psycopg.Connection) -> None:
    """As Excel saves "CSV" in a locale whose decimal mark is a comma: `;`, CRLF, a BOM."""
    path = write(tmp_path, "export_20230101.csv",
                 "\ufeffid;amount;city\r\n1;2,5;Köln\r\n2;10,75;\"Sankt; Augustin\"\r\n"
                 .encode())
    result = import_(cli_env, db_url, path)
    assert result.returncode == 0, result.stderr
    assert db_conn.execute("SELECT amount, city FROM snapshots ORDER BY id").fetchall() == [
        ("2,5", "Köln"), ("10,75", "Sankt; Augustin")]


def test_a_given_delimiter_is_not_second_guessed(tmp_path: Path, cli_env: dict[str, str],
                                                 db_url: str, db_conn: psycopg.Connection
                                                 ) -> None:
    path = write(tmp_path, "snapshot_20230101.csv", SEED.format(d=";").encode())
    result = import_(cli_env, db_url, "--delimiter", ";", path)
    assert result.returncode == 0, result.stderr
    assert "detected" not in result.stdout
    assert list(columns(db_conn)) == ["user_id", "name", "store_name", "credit_limit"]


def test_a_header_that_reads_as_one_column_but_is_delimited_is_refused(
        tmp_path: Path, cli_env: dict[str, str], db_url: str,
        db_conn: psycopg.Connection) -> None:
    """`;` and `|` both split the header and neither is the same on every record: refused,
    not loaded as one text column. The re-run with the delimiter said is a new attempt, not
    "already imported"."""
    path = write(tmp_path, "ragged_20230101.csv", b"a;b|c\n1;2|3\n4;5\n6|7\n")
    message = fails_cleanly(cli_env, db_url, db_conn, path)
    located(message, path, 1)
    assert "cannot tell the delimiter" in message and "';' or '|'" in message
    assert records(db_conn)[-1][:2] == (path.name, "failed")
    again = import_(cli_env, db_url, "--delimiter", ";", path)
    assert "already imported" not in again.stdout + again.stderr
    assert again.returncode == 1
    located(error_line(again), path, 4)  # `6|7` has one field with `;`: the data's own error
    assert "snapshots" not in relations(db_conn)


def test_a_single_column_file_stays_one_column(tmp_path: Path, cli_env: dict[str, str],
                                               db_url: str, db_conn: psycopg.Connection) -> None:
    path = write(tmp_path, "names_20230101.csv", b"name\nJake; Bob\nMostafa\n")
    result = import_(cli_env, db_url, path)
    assert result.returncode == 0, result.stderr
    assert db_conn.execute("SELECT name FROM snapshots ORDER BY name").fetchall() == [
        ("Jake; Bob",), ("Mostafa",)]


# --------------------------------------------------------------------------- BOMs


@pytest.mark.parametrize("mode", ["abort", "skip"])
def test_excel_utf8_bom_before_a_quoted_header(tmp_path: Path, cli_env: dict[str, str],
                                               db_url: str, db_conn: psycopg.Connection,
                                               mode: str) -> None:
    """Excel's "CSV UTF-8": a BOM, every header field quoted, CRLF."""
    path = write(tmp_path, "excel_20230101.csv",
                 b'\xef\xbb\xbf"id","name","note"\r\n1,"Jake","a, b"\r\n2,Mo,\r\n')
    result = import_(cli_env, db_url, "--on-error", mode, path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert db_conn.execute("SELECT id, name, note FROM snapshots ORDER BY id").fetchall() == [
        (1, "Jake", "a, b"), (2, "Mo", None)]


@pytest.mark.parametrize(("mark", "codec", "named"), [
    pytest.param(codecs.BOM_UTF16_LE, "utf-16-le", "UTF-16LE", id="utf16-le"),
    pytest.param(codecs.BOM_UTF16_BE, "utf-16-be", "UTF-16BE", id="utf16-be"),
    pytest.param(codecs.BOM_UTF32_LE, "utf-32-le", "UTF-32LE", id="utf32-le"),
    pytest.param(b"", "utf-16-le", "looks like UTF-16LE without a byte order mark",
                 id="utf16-le-without-a-mark"),
])
def test_a_utf16_file_is_named_by_its_byte_order_mark(tmp_path: Path, cli_env: dict[str, str],
                                                      db_url: str, db_conn: psycopg.Connection,
                                                      mark: bytes, codec: str,
                                                      named: str) -> None:
    """As Excel's "Unicode Text" and PowerShell's Out-File write it: a BOM, then UTF-16."""
    path = write(tmp_path, "unicode_20230101.csv",
                 mark + "id\tname\r\n1\tJake\r\n".encode(codec))
    for extra in ((), ("--dry-run",)):
        message = fails_cleanly(cli_env, db_url, db_conn, path, *extra)
        located(message, path, 1)
        assert named in message and "hint: convert it to UTF-8 first: iconv" in \
            import_(cli_env, db_url, path).stderr


@pytest.mark.parametrize("encoding", ["UTF16", "UTF-16", "utf-16le", "UTF32"])
def test_a_utf16_encoding_is_refused_in_one_line(tmp_path: Path, cli_env: dict[str, str],
                                                 db_url: str, db_conn: psycopg.Connection,
                                                 encoding: str) -> None:
    path = write(tmp_path, "unicode_20230101.csv", "id,name\n1,Jake\n".encode("utf-16"))
    message = fails_cleanly(cli_env, db_url, db_conn, path, "--encoding", encoding, code=2)
    assert "PostgreSQL has no UTF-" in message
    assert records(db_conn) == []


# --------------------------------------------------------------------------- dry run


# csv-spectrum's empty.csv and empty_crlf.csv: empty fields, quoted and not.
SPECTRUM_EMPTY = b'a,b,c\n1,"",""\n2,3,4\n'


@pytest.mark.parametrize(("name", "content"), [
    pytest.param("empty.csv", SPECTRUM_EMPTY, id="spectrum-empty"),
    pytest.param("empty_crlf.csv", SPECTRUM_EMPTY.replace(b"\n", b"\r\n"),
                 id="spectrum-empty-crlf"),
    pytest.param("quoted_empty_20230101.csv", b'id,n\n1,5\n2,""\n3,7\n',
                 id="quoted-empty-in-an-integer-column"),
    pytest.param("zero_bytes.csv", b"", id="zero-bytes"),
    pytest.param("only_crlf.csv", b"\r\n", id="only-crlf"),
    pytest.param("stray_20230101.csv", b'a,b\n1,a""b\n', id="misquoted"),
])
@pytest.mark.parametrize("mode", ["abort", "skip"])
def test_the_dry_run_verdict_is_the_imports(tmp_path: Path, cli_env: dict[str, str],
                                            db_url: str, db_conn: psycopg.Connection,
                                            name: str, content: bytes, mode: str) -> None:
    path = write(tmp_path, name, content)
    before = snapshot_state(db_conn)
    dry = import_(cli_env, db_url, "--on-error", mode, "--dry-run", path)
    assert snapshot_state(db_conn) == before, "the dry run wrote something"
    real = import_(cli_env, db_url, "--on-error", mode, path)
    assert dry.returncode == real.returncode, (dry.stdout, dry.stderr, real.stdout, real.stderr)
    if real.returncode == 0:
        said, done = out_line(dry), out_line(real)
        rows = done.split(": ", 1)[1].split(" in ")[0]
        assert said.split(": ", 1)[1].startswith(rows), (said, done)
        if "created" in done:  # the same table, the same types
            assert done.split("created ")[1].split(")")[0] in said
    else:
        assert errors(dry) == errors(real)


def test_a_dry_run_says_the_table_it_would_create(tmp_path: Path, cli_env: dict[str, str],
                                                  db_url: str) -> None:
    path = write(tmp_path, "empty.csv", SPECTRUM_EMPTY)
    dry = import_(cli_env, db_url, "--dry-run", path)
    assert "would create public.snapshots (a bigint, b text, c text)" in out_line(dry)


# --------------------------------------------------------------------------- invalid quoting

# (field as written, what COPY would have loaded instead, the reason, its byte in `1,FIELD`).
MISQUOTED = [
    pytest.param('a""b', "ab", "a quote inside an unquoted field", 4, id="doubled-in-unquoted"),
    pytest.param('a "b" c', "a b c", "a quote inside an unquoted field", 5,
                 id="quoted-word-in-unquoted"),
    pytest.param('"x"""y', 'x"y', "text after the closing quote", 7, id="trailing-pairs"),
    pytest.param('"x"y', "xy", "text after the closing quote", 5, id="text-after-quote"),
    pytest.param('""b', "b", "text after the closing quote", 4, id="empty-then-text"),
    pytest.param('12"', None, "a quote inside an unquoted field", 5, id="quote-before-delimiter"),
]


@pytest.mark.parametrize(("field", "copy_reads", "reason", "byte"), MISQUOTED)
def test_invalid_quoting_is_refused_with_line_column_and_byte(
        tmp_path: Path, cli_env: dict[str, str], db_url: str, db_conn: psycopg.Connection,
        field: str, copy_reads: str | None, reason: str, byte: int) -> None:
    path = write(tmp_path, "quotes_20230101.csv",
                 f'id,label,n\n0,"two\nlines",1\n1,{field},2\n2,plain,3\n'.encode())
    message = fails_cleanly(cli_env, db_url, db_conn, path)
    located(message, path, 4)
    assert f"malformed quoting: {reason}" in message
    assert f"at byte {byte} of the line" in message
    assert "column label" in message
    assert f"value {field!r}" in message


@pytest.mark.parametrize(("field", "copy_reads", "reason", "byte"), MISQUOTED)
def test_invalid_quoting_is_a_reject_in_skip_mode(
        tmp_path: Path, cli_env: dict[str, str], db_url: str, db_conn: psycopg.Connection,
        field: str, copy_reads: str | None, reason: str, byte: int) -> None:
    record = f"1,{field},2\n"
    path = write(tmp_path, "quotes_20230101.csv",
                 f'id,label,n\n0,"two\nlines",1\n{record}2,plain,3\n'.encode())
    result = import_(cli_env, db_url, "--on-error", "skip", path)
    assert result.returncode == 0, result.stderr
    assert db_conn.execute("SELECT id, label FROM snapshots ORDER BY id").fetchall() == [
        (0, "two\nlines"), (2, "plain")]
    rejects = db_conn.execute("SELECT line, raw, reason FROM snapshot_rejects").fetchall()
    assert [(line, bytes(raw)) for line, raw, _ in rejects] == [(4, record.encode())]
    assert reason in rejects[0][2]
