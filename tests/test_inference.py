"""Unit tests of snapshots/csvio's pure functions: names, dates, header checks and type
inference. No database, no processes: these run in milliseconds.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from snapshots.csvio.dialect import CsvOptions
from snapshots.csvio.header import check_names, normalize_name
from snapshots.csvio.inference import (
    BIGINT,
    BOOLEAN,
    DATE,
    NUMERIC,
    TEXT,
    TIMESTAMP,
    TIMESTAMPTZ,
    TypeInference,
    parse_type_overrides,
    widen_type,
)
from snapshots.csvio.names import load_order, snapshot_date
from snapshots.errors import InputError, UsageError


def infer(*values: str, null: str = "") -> str:
    """The type inferred for a one-column file holding `values`."""
    inference = TypeInference(1, null=null)
    inference.feed([[v] for v in values])
    return inference.types()[0]


# --------------------------------------------------------------------------- snapshot_date


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("snapshot_20230101.csv", dt.date(2023, 1, 1)),
        ("snapshot_20230603.csv.gz", dt.date(2023, 6, 3)),
        ("20240229-users.csv", dt.date(2024, 2, 29)),  # a leap day
        ("a20230101b.csv", dt.date(2023, 1, 1)),  # letters around the digits are fine
        # The first run that is a valid date wins; invalid ones are passed over.
        ("x_20231301_20230102.csv", dt.date(2023, 1, 2)),
        ("x_20230102_20240101.csv", dt.date(2023, 1, 2)),
        ("s_20230229.csv", None),  # 2023 is no leap year
        ("snapshot_2023-01-01.csv", None),  # not 8 digits in a row
        ("snapshot_123456789.csv", None),  # 9 digits are not a run of 8
        ("snapshot_2023010.csv", None),  # 7 digits
        ("users.csv", None),
        ("", None),
    ],
)
def test_snapshot_date(name: str, expected: dt.date | None) -> None:
    assert snapshot_date(name) == expected


def test_load_order_is_date_order_then_undated_by_name() -> None:
    paths = [Path(p) for p in (
        "z/undated_b.csv", "b/snapshot_20230603.csv", "undated_a.csv.gz",
        "a/snapshot_20230101.csv", "other_20230101.csv", "snapshot_20221231.csv",
    )]
    assert [p.name for p in load_order(paths)] == [
        "snapshot_20221231.csv",
        "other_20230101.csv",  # same date: by name
        "snapshot_20230101.csv",
        "snapshot_20230603.csv",
        "undated_a.csv.gz",  # undated last, by name (not by directory)
        "undated_b.csv",
    ]


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Store Name", "store_name"),
        ("  user_id  ", "user_id"),
        ("CREDIT-LIMIT (EUR)", "credit_limit_eur_"),
        ("a.b", "a_b"),
        ("x\"); DROP TABLE t; --", "x_drop_table_t_"),
        ("id", "id"),
        ("Größe", "größe"),  # letters stay letters, whatever the alphabet
        ("Crédit", "crédit"),
    ],
)
def test_normalize_name(raw: str, expected: str) -> None:
    assert normalize_name(raw) == expected


def test_check_names_normalises() -> None:
    header = check_names(["User ID", "Store Name", "credit_limit"], file="f.csv")
    assert header.names == ("user_id", "store_name", "credit_limit")
    assert header.raw == ("User ID", "Store Name", "credit_limit")


def test_check_names_keeps_distinct_non_ascii_names_apart() -> None:
    assert check_names(["Größe", "Grüße"], file="f.csv").names == ("größe", "grüße")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (["id", "ID"], "both become"),
        (["Store Name", "store_name"], "both become"),
        (["id", "id"], "duplicate column name"),
        (["id", ""], "column 2 has an empty name"),
        (["id", "  "], "column 2 has an empty name"),
        (["id", "--"], "column 2 has an empty name"),
        (["a" * 64], "longer than 63 bytes"),
        (["é" * 32], "longer than 63 bytes"),  # 64 bytes in UTF-8, 32 characters
        (["Snapshot ID"], "reserved"),
        (["a\x00b"], "NUL byte"),
    ],
)
def test_check_names_rejects(raw: list[str], message: str) -> None:
    with pytest.raises(InputError) as info:
        check_names(raw, file="data/f.csv")
    assert message in str(info.value)
    assert str(info.value).startswith("data/f.csv:1: ")


def test_check_names_limits() -> None:
    assert len(check_names(["a" * 63], file="f").names[0]) == 63
    assert len(check_names([f"c{i}" for i in range(1600)], file="f").names) == 1600
    with pytest.raises(InputError, match="1601 columns, more than PostgreSQL's limit of 1600"):
        check_names([f"c{i}" for i in range(1601)], file="f")


def test_parse_type_overrides() -> None:
    assert parse_type_overrides(["User ID=text", "amount = numeric(10,2)"]) == {
        "user_id": "text", "amount": "numeric(10,2)"}
    for bad in ("user_id", "=text", "user_id="):
        with pytest.raises(UsageError, match="expected COL=TYPE"):
            parse_type_overrides([bad])


def test_csv_options_validation() -> None:
    with pytest.raises(UsageError, match="one character"):
        CsvOptions(delimiter=";;")
    with pytest.raises(UsageError, match="must differ"):
        CsvOptions(delimiter='"')
    with pytest.raises(UsageError, match="--no-header needs --columns"):
        CsvOptions(header=False)
    with pytest.raises(UsageError, match="--columns goes with --no-header"):
        CsvOptions(columns=("a",))
    with pytest.raises(UsageError, match="--null must not contain"):
        CsvOptions(null="a,b")
    with pytest.raises(UsageError, match="not an encoding"):
        CsvOptions(encoding="NO-SUCH-ENCODING")
    assert CsvOptions(encoding="latin1").python_encoding == "latin-1"
    assert CsvOptions(encoding="WIN1252").python_encoding == "cp1252"


# --------------------------------------------------------------------------- type inference


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (("1", "-5", "0", "42"), BIGINT),
        (("1", "1.5"), NUMERIC),
        (("10000.1", "500.002", "2500.00"), NUMERIC),
        (("0.0", "-0.5"), NUMERIC),
        (("true", "false"), BOOLEAN),
        (("2023-01-02", "2024-02-29"), DATE),
        (("2023-01-02 10:00:00", "2023-01-02T10:00:00.123456"), TIMESTAMP),
        (("2023-01-02T10:00:00+02:00", "2023-01-02 10:00:00Z"), TIMESTAMPTZ),
        (("2023-01-02 10:00:00+0530", "2023-01-02 10:00:00-03"), TIMESTAMPTZ),
        (("a", "1"), TEXT),
    ],
)
def test_inferred_types(values: tuple[str, ...], expected: str) -> None:
    assert infer(*values) == expected


@pytest.mark.parametrize(
    "value",
    [
        "007",  # leading zeros (an id, a zip code) would be lost
        "00",
        "+5",  # an explicit plus sign would be lost
        "1e5",  # exponent forms are rewritten by the server
        "1.0e3",
        "-0",  # negative zero prints as 0
        "-0.0",
        ".5",
        "1.",
        " 1",
        "1_000",
        "NaN",
        "Infinity",
        "TRUE",  # prints back as true
        "t",
        "yes",
        "01/02/2023",  # locale-style dates: day and month are anyone's guess
        "02.01.2023",
        "2023-1-2",
        "2023-02-30",  # not a calendar date
        "2023-01-02 24:00:00",
        "2023-01-02T10:00:00.1234567",  # beyond microseconds
        "2023-01-02 10:00:00+20:00",  # beyond PostgreSQL's offset range
        "10:00:00",
    ],
)
def test_lossy_forms_stay_text(value: str) -> None:
    assert infer(value) == TEXT
    assert infer("1", value) == TEXT  # however the rest of the column looks


def test_bigint_bounds_19_digits() -> None:
    assert infer("9223372036854775807") == BIGINT
    assert infer("-9223372036854775808") == BIGINT
    # One past either end still fits numeric exactly.
    assert infer("9223372036854775808") == NUMERIC
    assert infer("-9223372036854775809") == NUMERIC
    assert infer("1", "9999999999999999999") == NUMERIC


def test_integers_beyond_19_digits_are_numeric() -> None:
    assert infer("10000000000000000000") == NUMERIC
    assert infer("-123456789012345678901234567890") == NUMERIC
    assert infer("123456789012345678901234567890.5") == NUMERIC


def test_mixed_date_and_timestamp_is_text() -> None:
    # A date read as a timestamp would print with 00:00:00 added.
    assert infer("2023-01-02", "2023-01-02 10:00:00") == TEXT
    assert infer("2023-01-02 10:00:00", "2023-01-02 10:00:00+00") == TEXT


def test_nulls_say_nothing_about_the_type() -> None:
    assert infer("1", "", "2") == BIGINT
    assert infer("", "") == TEXT  # never saw a value
    assert infer("NA", "3", null="NA") == BIGINT
    # With --null NA an empty field is an empty string, which no number is.
    assert infer("", "3", null="NA") == TEXT


def test_values_with_line_breaks_are_text() -> None:
    assert infer("1\n2") == TEXT
    assert infer("1", "2\n3") == TEXT
    assert infer("true\nfalse") == TEXT


def test_inference_widens_across_batches() -> None:
    inference = TypeInference(3)
    inference.feed([["1", "2023-01-01", "true"]])
    assert inference.types() == [BIGINT, DATE, BOOLEAN]
    inference.feed([["1.5", "2023-01-02", "false"]])
    assert inference.types() == [NUMERIC, DATE, BOOLEAN]
    inference.feed([["x", "2023-01-03", "true"], ["2", "", ""]])
    assert inference.types() == [TEXT, DATE, BOOLEAN]
    inference.feed([["3", "tomorrow", "true"]])  # never narrows back
    assert inference.types() == [TEXT, TEXT, BOOLEAN]


def test_inference_overrides_and_widen() -> None:
    inference = TypeInference(2, overrides={1: "text"})
    inference.feed([["1", "2"]])
    assert inference.types() == [BIGINT, "text"]
    inference.widen(0, NUMERIC)
    assert inference.types() == [NUMERIC, "text"]
    inference.widen(0)
    assert inference.types() == [TEXT, "text"]


def test_inference_short_rows_leave_columns_unseen() -> None:
    inference = TypeInference(2)
    inference.feed([["1"]])
    assert inference.types() == [BIGINT, TEXT]


@pytest.mark.parametrize(
    ("current", "wider"),
    [("bigint", NUMERIC), ("integer", NUMERIC), ("smallint", NUMERIC), ("numeric", TEXT),
     ("date", TEXT), ("boolean", TEXT), ("timestamp without time zone", TEXT)],
)
def test_widen_type(current: str, wider: str) -> None:
    assert widen_type(current) == wider
