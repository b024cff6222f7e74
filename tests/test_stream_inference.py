"""StreamInference, the type check on the bytes on their way into COPY: whatever way the
file is cut into chunks, it reaches the verdict of checking every parsed value."""

from __future__ import annotations

import csv
import io
import random

import pytest

from snapshots.csvio.dialect import CsvOptions
from snapshots.csvio.inference import FEED_PIECE, StreamInference, TypeInference

OPTIONS = CsvOptions()


def stream_types(data: bytes, cuts: list[int], width: int,
                 options: CsvOptions = OPTIONS) -> list[str]:
    inference = StreamInference(width, options)
    start = 0
    for cut in [*cuts, len(data)]:
        inference.feed(data[start:cut])
        start = cut
    inference.finish()
    return inference.types()


def exact_types(data: bytes, width: int) -> list[str]:
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))[1:]
    inference = TypeInference(width)
    inference.feed(rows)
    return inference.types()


def numbers_file(rows: int, late: dict[int, str] | None = None) -> bytes:
    """id,name,amount,day; `late` puts a value in the amount column at those rows."""
    late = late or {}
    out = ["id,name,amount,day"]
    for i in range(1, rows + 1):
        amount = late.get(i, f"{i % 9973}.{i % 100:02d}")
        out.append(f'{i},"Omar\'s Olives, Oils & More",{amount},2024-01-{i % 28 + 1:02d}')
    return ("\n".join(out) + "\n").encode()


@pytest.mark.parametrize("late", ["007", "+5", "1e3", "-0", "12,5", "n/a", '"1 000"'])
def test_a_late_value_makes_its_column_text(late: str) -> None:
    rows = 60_000  # several FEED_PIECEs: the value arrives long after the types settled
    data = numbers_file(rows, {rows - 3: late})
    assert len(data) > 10 * FEED_PIECE
    expected = ["bigint", "text", "text", "date"]
    if late == "12,5":  # an unquoted comma is one more field: that record is COPY's to refuse
        expected = ["bigint", "text", "numeric", "date"]
    assert stream_types(data, [], 4) == expected


def test_a_late_value_at_every_cut_around_it() -> None:
    data = numbers_file(3_000, {2_990: "007"})
    at = data.index(b",007,")
    for cut in range(at - 40, at + 40):
        assert stream_types(data, [cut], 4) == ["bigint", "text", "text", "date"], cut


def test_a_late_value_at_a_piece_boundary() -> None:
    # feed() splits a chunk into FEED_PIECEs: the value straddles the first such boundary.
    data = numbers_file(20_000)
    at = data.index(b"\n", FEED_PIECE - 30) + 1
    record_end = data.index(b"\n", at)
    record = data[at:record_end].split(b",")
    bad = b",".join([record[0], b'"x"', b"0042", record[-1]])
    data = data[:at] + bad + data[record_end:]
    assert stream_types(data, [], 4) == ["bigint", "text", "text", "date"]


def test_quoted_line_breaks_and_quotes_across_cuts() -> None:
    data = (b'id,note,n\n1,"a\nb, ""c""",5\n2,"",6\n3,"x\r\ny",\n4,plain,-7\n')
    for cut in range(1, len(data)):
        assert stream_types(data, [cut], 3) == ["bigint", "text", "bigint"], cut


def test_header_and_bom_cut_anywhere() -> None:
    data = "\ufeffnum,\"a \"\"quoted\"\",\nheader\"\n1,2\n3,4\n".encode()
    for cut in range(1, len(data)):
        assert stream_types(data, [cut], 2) == ["bigint", "bigint"], cut
    for cut in range(1, len(data)):
        assert stream_types(data, list(range(cut, len(data), cut)), 2) == \
            ["bigint", "bigint"], cut


def test_header_only_and_no_trailing_newline() -> None:
    assert stream_types(b"a,b", [], 2) == ["text", "text"]
    assert stream_types(b"a,b\n1,true", [], 2) == ["bigint", "boolean"]
    assert stream_types(b"a,b\n1,true\n2,maybe", [2, 9], 2) == ["bigint", "text"]
    # The last record ends in a bare \r: still looked at.
    assert stream_types(b"a,b\n1,true\n007,true\r", [], 2) == ["text", "boolean"]
    # Its quote is never closed: no values to read (COPY refuses the file), no error here.
    assert stream_types(b"a,b\n1,true\n2,\"maybe", [], 2) == ["bigint", "boolean"]


def test_random_files_random_cuts_match_checking_every_value() -> None:
    rng = random.Random(15)
    pool = ["1", "-12", "0", "007", "3.25", "-0.5", "+1", "true", "false", "2024-02-29",
            "2024-02-29 10:11:12", "2024-02-29T10:11:12+02:00", "", "x", '"q,uo""te"',
            '"line\nbreak"', "9223372036854775807", "12345678901234567890", "1e5"]
    for _ in range(150):
        width = rng.randint(1, 4)
        kinds = [rng.sample(pool, rng.randint(1, 3)) for _ in range(width)]
        lines = [",".join(f"c{i}" for i in range(width))]
        for _ in range(rng.randint(0, 400)):
            lines.append(",".join(rng.choice(k) for k in kinds))
        data = ("\r\n" if rng.random() < 0.2 else "\n").join(lines).encode()
        if rng.random() < 0.5:
            data += b"\n"
        cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(0, 30))))
        assert stream_types(data, cuts, width) == exact_types(data, width), (data, cuts)


def test_resume_checks_every_value_again_from_the_sampled_types() -> None:
    data = numbers_file(30_000, {29_000: "1,5"})  # past the sample: one more field, ignored
    data = data.replace(b"\n29500,", b"\n0029500,")  # a leading zero far past the sample
    sample = StreamInference(4, OPTIONS)
    sample.feed(data[:64 << 10])
    assert sample.types() == ["bigint", "text", "numeric", "date"]
    again = sample.resume()
    again.feed(data)
    again.finish()
    assert again.types() == ["text", "text", "numeric", "date"]
    assert sample.types() == ["bigint", "text", "numeric", "date"]  # its own state untouched


def test_resume_from_random_samples_matches_checking_every_value() -> None:
    rng = random.Random(153)
    pool = ["1", "-2", "2.5", "007", "true", "2024-01-02", "", "x"]
    for _ in range(100):
        kinds = [rng.sample(pool, rng.randint(1, 3)) for _ in range(3)]
        lines = ["a,b,c", *(",".join(rng.choice(k) for k in kinds) for _ in range(300))]
        data = ("\n".join(lines) + "\n").encode()
        sample = StreamInference(3, OPTIONS)
        sample.feed(data[:rng.randint(0, len(data))])
        again = sample.resume()
        again.feed(data)
        again.finish()
        assert again.types() == exact_types(data, 3), data


def test_quoted_text_columns_neither_hide_a_record_nor_make_one_up() -> None:
    # Quoted line breaks, delimiters and doubled quotes in the text columns after a typed one.
    data = (b'id,a,b\n1,"x\n007,y",z\n2,"p,""q""\n-0,",\n3,r,"s\n+4"\n'
            b'5,"",""\n6,t,u\n')
    for cut in range(1, len(data)):
        assert stream_types(data, [cut], 3) == ["bigint", "text", "text"], cut
    late = data + b'7,v,"w\nx"\n008,y,z\n'
    assert stream_types(late, [], 3) == ["text", "text", "text"]


def test_a_file_settled_as_text_is_not_walked_any_further() -> None:
    inference = StreamInference(2, OPTIONS)
    inference.feed(b"a,b\nx,y\n")
    assert inference.types() == ["text", "text"]
    inference.feed(b'"unterminated' * 10_000)  # nothing left to learn: not even kept
    inference.finish()
    assert inference._carry == ""
    assert inference.types() == ["text", "text"]
