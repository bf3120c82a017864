"""Readers: exact counts on real data, format equivalence, and clear errors on bad input."""

from __future__ import annotations

import subprocess
import sys

import pyarrow as pa
import pytest

from cmml.data import open_dataset
from cmml.data import records as R
from cmml.data.movielens import MovieLens1M, MovieLens20M, Synthetic
from cmml.errors import DataFormatError, DatasetNotFoundError


def _folder(path, files: dict | None = None):
    """A dataset folder holding ``files`` (name -> text, or bytes)."""
    path.mkdir()
    for name, content in (files or {}).items():
        (path / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def test_ml100k_exact_counts(ml100k_dir):
    ds = open_dataset(ml100k_dir)
    result = ds.read_interactions()
    assert result.table.num_rows == 100_000
    assert result.stats.rows_rejected == 0 and result.stats.rows_in == 100_000
    assert len(pa.compute.unique(result.table[R.USER_ID])) == 943
    assert len(pa.compute.unique(result.table[R.ITEM_ID])) == 1682
    assert result.table.schema.equals(R.INTERACTION_SCHEMA)
    first = result.table.slice(0, 1).to_pylist()[0]
    assert first == {
        "user_id": "196",
        "item_id": "242",
        "label": 3.0,
        "timestamp": 881250949,
        "scenario": None,
        "task_key": None,
    }
    items, rejects = ds.read_items()
    assert items.num_rows == 1682 and not rejects
    toy = items.slice(0, 1).to_pylist()[0]
    assert toy["title"] == "Toy Story (1995)" and toy["year"] == 1995
    assert toy["genres"] == ["Animation", "Children's", "Comedy"]
    users, rejects = ds.read_users()
    # u.user here carries one extra placeholder row (user 0) that no rating references
    assert users.num_rows == 944 and not rejects


def test_ml1m_partial_exact_counts(ml1m_partial_dir):
    ds = open_dataset(ml1m_partial_dir)
    assert ds.name == "ml-1m-partial"
    result = ds.read_interactions()
    assert result.table.num_rows == 486_988
    assert len(pa.compute.unique(result.table[R.USER_ID])) == 5991
    assert len(pa.compute.unique(result.table[R.ITEM_ID])) == 3585
    assert result.table[R.TIMESTAMP].null_count == 486_988  # this layout has no timestamps
    items, _ = ds.read_items()
    toy = [r for r in items.to_pylist() if r["item_id"] == "1"][0]
    assert toy["rated"] == "G" and toy["directors"] == ["John Lasseter"]
    assert toy["actors"][:2] == ["Tom Hanks", "Tim Allen"]
    users, _ = ds.read_users()
    assert users.num_rows == 6040
    assert users.slice(0, 1).to_pylist()[0] == {
        "user_id": "1",
        "gender": "F",
        "age": 1,
        "occupation": "10",
        "zip": "48067",
    }


RATINGS = [(1, 1193, 5, 978300760), (1, 661, 3, 978302109), (2, 1357, 5, 978298709), (10, 2, 4, 978301968)]


def test_ml1m_dat_and_csv_give_identical_records(tmp_path):
    dat = tmp_path / "ml1m"
    dat.mkdir()
    (dat / "ratings.dat").write_text("".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in RATINGS))
    csv = tmp_path / "ml20m"
    csv.mkdir()
    (csv / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n" + "".join(f"{u},{i},{r},{t}\n" for u, i, r, t in RATINGS)
    )
    (csv / "movies.csv").write_text("movieId,title,genres\n")
    a = open_dataset(dat).read_interactions().table
    b = open_dataset(csv).read_interactions().table
    assert isinstance(open_dataset(dat), MovieLens1M) and isinstance(open_dataset(csv), MovieLens20M)
    assert a.equals(b)
    assert a.to_pylist()[0] == {
        "user_id": "1",
        "item_id": "1193",
        "label": 5.0,
        "timestamp": 978300760,
        "scenario": None,
        "task_key": None,
    }


def test_blocks_keep_line_numbers(tmp_path):
    """A file read in many small blocks reports the same rows and the right line numbers."""
    d = _folder(tmp_path / "ml")
    lines = [f"{u}::{u % 7 + 1}::{u % 5 + 1}::{1000 + u}" for u in range(1, 2001)]
    lines[1500] = "1501::3::x::2501"
    (d / "ratings.dat").write_text("\n".join(lines) + "\n")
    ds = open_dataset(d)
    batches = list(ds.iter_interactions(on_error="collect", block_bytes=997))
    assert len(batches) > 20
    assert sum(b.table.num_rows for b in batches) == 1999
    (bad,) = [r for b in batches for r in b.rejects]
    assert bad.line == 1501 and "field 'rating' is 'x'" in bad.reason
    with pytest.raises(DataFormatError, match=r"ratings.dat line 1501, field|ratings.dat line 1501: non-numeric"):
        for _ in ds.iter_interactions(block_bytes=997):
            pass


CORRUPT = (
    "1::10::4::100\n"
    "2::11::5\n"  # wrong field count
    "3::12::x::102\n"  # non-numeric rating
    "4::13::9::103\n"  # out of range
    "::14::3::104\n"  # empty user id
    "\n"  # blank line: skipped and counted, not an error
    "6::15::2::105\n"
    "7::16::3"  # truncated last line, no newline
)


def test_corrupt_rows_are_rejected_with_file_line_field(tmp_path):
    d = _folder(tmp_path / "ml", {"ratings.dat": CORRUPT})
    ds = open_dataset(d)
    result = ds.read_interactions(on_error="collect")
    assert result.table[R.USER_ID].to_pylist() == ["1", "6"]
    assert result.stats.rows_ok == 2 and result.stats.blank_lines == 1
    by_line = {r.line: r.reason for r in result.rejects}
    assert sorted(by_line) == [2, 3, 4, 5, 8]
    assert by_line[2].startswith("wrong field count: expected 4 fields separated by '::', found 3")
    assert by_line[3] == "non-numeric label: field 'rating' is 'x'"
    assert by_line[4] == "label out of range: field 'rating' is 9, not in [1, 5]"
    assert by_line[5] == "empty user id: field 'user_id' is empty"
    assert by_line[8].startswith("wrong field count")
    assert dict(result.stats.rejected_by_reason) == {
        "wrong field count": 2,
        "non-numeric label": 1,
        "label out of range": 1,
        "empty user id": 1,
    }
    with pytest.raises(DataFormatError) as err:
        ds.read_interactions()
    assert str(err.value).endswith(
        "ratings.dat line 2: wrong field count: expected 4 fields separated by '::', found 3"
    )


def test_wrong_separator_is_named(tmp_path):
    d = _folder(tmp_path / "ml", {"ratings.dat": "1\t10\t4\t100\n"})
    with pytest.raises(
        DataFormatError, match=r"line 1: wrong field count: .* found 1 \(the line looks separated by tabs\)"
    ):
        open_dataset(d).read_interactions()


def test_empty_and_missing_files(tmp_path):
    d = _folder(tmp_path / "ml", {"ratings.dat": ""})
    with pytest.raises(DataFormatError, match="ratings.dat: file is empty"):
        open_dataset(d).read_interactions()
    with pytest.raises(DatasetNotFoundError, match="unknown dataset 'ml-2m'"):
        open_dataset("ml-2m")
    empty = tmp_path / "nothing"
    empty.mkdir()
    with pytest.raises(DatasetNotFoundError, match="no known dataset layout"):
        open_dataset(empty)


def test_csv_header_is_checked(tmp_path):
    d = _folder(tmp_path / "p", {"ratings.csv": "user;movie;rating\n1;2;3\n", "users.dat": "1::F::1::10::48067\n"})
    with pytest.raises(
        DataFormatError, match=r"ratings.csv line 1: header is 'user;movie;rating', expected 'user_id,movie_id,rating'"
    ):
        open_dataset(d).read_interactions()


def test_latin1_side_files(tmp_path):
    d = _folder(
        tmp_path / "ml1m",
        {"ratings.dat": "1::1::5::1\n", "movies.dat": "1::Misérables, Les (1995)::Drama|War\n".encode("latin-1")},
    )
    items, _ = open_dataset(d).read_items()
    assert items.to_pylist()[0]["title"] == "Misérables, Les (1995)"
    assert items.to_pylist()[0]["genres"] == ["Drama", "War"]


def test_generic_csv_with_column_mapping(tmp_path):
    log = tmp_path / "clicks.csv"
    log.write_text('session,uid,sku,ts,cat\ns1,u1,i9,5,"toys"\ns1,u2,i8,6,\ns2,,i7,7,books\n')
    ds = open_dataset(log, columns="user=uid,item=sku,timestamp=ts,scenario=cat,task=session")
    result = ds.read_interactions(on_error="collect")
    assert result.table.to_pylist() == [
        {"user_id": "u1", "item_id": "i9", "label": 1.0, "timestamp": 5, "scenario": "toys", "task_key": "s1"},
        {"user_id": "u2", "item_id": "i8", "label": 1.0, "timestamp": 6, "scenario": None, "task_key": "s1"},
    ]
    assert [r.line for r in result.rejects] == [4]
    with pytest.raises(DataFormatError, match="header has no column\\(s\\) 'item'"):
        open_dataset(log, columns="user=uid,item=item").read_interactions()
    with pytest.raises(DatasetNotFoundError, match="column mapping"):
        open_dataset(log)


STRAY_QUOTE = 'uid,iid,rating,ts\n1,10,5,100\n6,"14,2,104\n7,15,4,105\n"8","1""6",3,106\n9,"17,1,107'


@pytest.mark.parametrize("block_bytes", [1 << 20, 20])
def test_a_stray_quote_quarantines_its_line_only(tmp_path, block_bytes):
    """An unclosed quote would swallow the lines after it: its line is rejected, the others are read."""
    log = tmp_path / "log3.csv"
    log.write_text(STRAY_QUOTE)
    ds = open_dataset(log, columns="user=uid,item=iid,label=rating,timestamp=ts")
    batches = list(ds.iter_interactions(on_error="collect", block_bytes=block_bytes))
    rows = [r for b in batches for r in b.table.to_pylist()]
    assert [(r["user_id"], r["item_id"], r["label"]) for r in rows] == [("1", "10", 5), ("7", "15", 4), ("8", '1"6', 3)]
    rejects = [r for b in batches for r in b.rejects]
    reason = "unbalanced quote: a '\"' is not closed"
    assert [(r.line, r.reason) for r in rejects] == [(3, reason), (6, reason)]
    assert rejects[0].text == '6,"14,2,104'
    assert len(rows) + len(rejects) == STRAY_QUOTE.count("\n")  # every line but the header is accounted for


def test_a_declared_label_range_rejects_labels_outside_it(tmp_path):
    log = tmp_path / "log4.csv"
    log.write_text("uid,iid,rating\n1,10,5\n6,14,9\n7,15,0.5\n")
    cmd = [sys.executable, "-m", "cmml.cli", "data", "inspect", "--data", str(log), "--columns"]
    out = subprocess.run(
        cmd + ["user=uid,item=iid,label=rating", "--label-range", "1,5"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "1 rows read, 2 rejected (label out of range: 2)" in out.stdout
    assert "log4.csv line 3: label out of range: field 'rating' is 9, not in [1, 5]" in out.stdout
    out = subprocess.run(cmd + ["user=uid,item=iid", "--label-range", "5,1"], capture_output=True, text=True)
    assert out.returncode == 2 and "LO must not exceed HI" in out.stderr


def test_synthetic_reader_adds_scenarios(synthetic_small):
    ds = open_dataset(synthetic_small)
    assert isinstance(ds, Synthetic)
    t = ds.read_interactions().table
    assert t[R.SCENARIO].null_count == 0
    assert len(pa.compute.unique(t[R.SCENARIO])) == 24


def test_cli_errors_are_one_line(tmp_path):
    d = _folder(tmp_path / "ml", {"ratings.dat": "1::2::x::4\n"})
    cmd = [sys.executable, "-m", "cmml.cli", "data", "inspect", "--data"]
    out = subprocess.run(cmd + ["no-such-dataset"], capture_output=True, text=True)
    assert out.returncode == 1 and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert out.stderr.startswith("cmml: error: unknown dataset 'no-such-dataset'")
    # inspect collects bad rows instead of stopping, and shows them
    out = subprocess.run(cmd + [str(d)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "1 rejected (non-numeric label: 1)" in out.stdout
    assert "ratings.dat line 1: non-numeric label: field 'rating' is 'x'" in out.stdout
