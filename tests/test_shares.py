"""Inputs cut into shares for Spark's tasks (batch/shares.py) and the places files live
(batch/storage.py), without Spark: read share by share, a file gives the rows, row numbers and
values it gives read whole, however the cuts fall."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from ad_purchase.batch import shares
from ad_purchase.batch.files import Sink, Source
from ad_purchase.batch.storage import Location, PartFolder, StorageError, part_name
from ad_purchase.schema import InputError

from api_support import customers

ROWS = 60


def read_all(batches) -> tuple[list, list]:
    ids, rows = [], []
    for batch in batches:
        ids += batch.records.column("customer").to_pylist()
        rows += batch.rows.tolist()
    return ids, rows


def by_shares(path, size: int, monkeypatch) -> tuple[list, list, int]:
    """The file read share by share, with shares of `size` bytes, numbered as a job numbers them."""
    monkeypatch.setattr(shares, "MIN_SHARE_BYTES", 1)
    monkeypatch.setattr(shares, "MAX_SHARE_BYTES", size)
    source = Source(path, "customer", text_by_default=True)
    cut = shares.plan([source], cores=1)
    if source.format == "csv":
        cut = shares.numbered(cut, dict(shares.count_lines(share) for share in cut))
    ids, rows = [], []
    for share in cut:
        more_ids, more_rows = read_all(Source(path, "customer").read(share.part))
        ids, rows = ids + more_ids, rows + more_rows
    return ids, rows, len(cut)


@pytest.fixture(scope="module")
def frame():
    rows = customers(ROWS, seed=3)
    rows.loc[20, "customer"] = "long " * 2_000              # one line longer than many shares
    return rows


@pytest.mark.parametrize("ending", ["\n", "\r\n"])
@pytest.mark.parametrize("trailing", [True, False])
@pytest.mark.parametrize("size", [997, 6_000, 1 << 30])
def test_csv_shares_give_every_row_once_with_its_number(frame, tmp_path, monkeypatch, ending, trailing, size):
    header, *lines = frame.to_csv(index=False).splitlines()
    lines[30:30] = ["", ""]                                  # blank lines: counted, not read
    text = ending.join([header, *lines]) + (ending if trailing else "")
    path = tmp_path / "rows.csv"
    path.write_bytes(text.encode())
    whole = read_all(Source(path, "customer"))
    ids, rows, count = by_shares(path, size, monkeypatch)
    assert (ids, rows) == whole
    assert len(ids) == ROWS and rows[-1] == ROWS + 2
    assert count > 1 or size == 1 << 30


def test_a_cut_on_either_side_of_a_line_start_gives_that_line_to_one_share(frame, tmp_path):
    """Two shares cut at every offset within two bytes of a line start (before, at and after the
    line break): each line is read once, by the share where it starts."""
    header, *lines = frame.head(4).to_csv(index=False).splitlines()
    lines[2:2] = [""]
    path = tmp_path / "rows.csv"
    path.write_text("\n".join([header, *lines]) + "\n")
    data, whole = path.read_bytes(), read_all(Source(path, "customer"))
    starts = [i + 1 for i, byte in enumerate(data) if byte == ord("\n")][:-1]
    size = len(data)
    for cut in sorted({c for s in starts for c in range(s - 2, s + 3)} - {starts[0] - 2, starts[0] - 1}):
        parts = [shares.Share(0, str(path), shares.Part(start=starts[0], end=cut), None),
                 shares.Share(1, str(path), shares.Part(start=cut, end=size), None)]
        cut_shares = shares.numbered(parts, dict(shares.count_lines(share) for share in parts))
        ids, rows = [], []
        for share in cut_shares:
            more = read_all(Source(path, "customer").read(share.part))
            ids, rows = ids + more[0], rows + more[1]
        assert (ids, rows) == whole, cut


@pytest.mark.parametrize("size", [1, 30_000, 1 << 30])
def test_parquet_shares_are_runs_of_row_groups_numbered_from_the_footer(frame, tmp_path, monkeypatch, size):
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=7)
    ids, rows, count = by_shares(path, size, monkeypatch)
    assert (ids, rows) == read_all(Source(path, "customer"))
    assert (count == 9) if size == 1 else (count < 9)


def test_a_quoted_line_break_is_named_when_shares_are_cut(frame, tmp_path, monkeypatch):
    quoted = frame.copy()
    quoted.loc[40, "customer"] = "two\nlines"
    path = tmp_path / "quoted.csv"
    quoted.to_csv(path, index=False)
    assert read_all(Source(path, "customer"))[0][40] == "two\nlines"        # read whole, it is fine
    with pytest.raises(InputError, match="quoted value holds a line break"):
        by_shares(path, 2_000, monkeypatch)


def test_a_header_only_file_is_one_empty_share(frame, tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text(frame.head(0).to_csv(index=False))
    cut = shares.plan([Source(path)], cores=2)
    assert len(cut) == 1 and shares.count_lines(cut[0]) == (0, 0)


def test_a_folder_lists_its_parquet_files_or_else_its_other_files_in_name_order(tmp_path):
    (tmp_path / "b.csv").write_text("x")
    (tmp_path / "a.csv").write_text("x")
    (tmp_path / "_SUCCESS").write_text("")
    (tmp_path / ".a.csv.crc").write_text("")
    assert [f.path.rsplit("/", 1)[1] for f in shares.input_files(Location.of(tmp_path))] == ["a.csv", "b.csv"]
    (tmp_path / "c.parquet").write_text("x")
    assert [f.path.rsplit("/", 1)[1] for f in shares.input_files(Location.of(tmp_path))] == ["c.parquet"]
    with pytest.raises(StorageError, match="does not exist"):
        shares.input_files(Location.of(tmp_path / "absent.csv"))


def test_locations_by_uri():
    assert Location.of("file:///data/rows.csv").local and Location.of("file:///data/rows.csv").path == "/data/rows.csv"
    assert Location.of("rows.csv").local
    with pytest.raises(StorageError, match="^nowhere://rows.csv: cannot reach its file system"):
        Location.of("nowhere://rows.csv")


def elsewhere(path) -> Location:
    """A folder reached through pyarrow's file system calls, as HDFS or S3 would be."""
    return Location(f"mock://{path}", str(path), pafs.LocalFileSystem())


def test_parts_on_another_file_system_appear_whole_and_marked(tmp_path):
    target = tmp_path / "scores"
    target.mkdir()
    (target / "old.parquet").write_text("from an earlier run")
    folder = PartFolder(elsewhere(target))
    assert folder.where.filesystem is not None and not list(target.iterdir())       # emptied first
    sink = Sink(folder.where.child(part_name(3)))
    sink.write(pa.record_batch([pa.array([1, 2])], names=["row"]))
    assert [p.name for p in target.iterdir()][0].startswith(".part-00003.parquet.")   # not yet in place
    sink.commit()
    folder.commit()
    assert sorted(p.name for p in target.iterdir()) == ["_SUCCESS", "part-00003.parquet"]
    assert pq.read_table(target / "part-00003.parquet").column("row").to_pylist() == [1, 2]
    failed = Sink(elsewhere(target).child(part_name(4)))
    failed.write(pa.record_batch([pa.array([1])], names=["row"]))
    failed.discard()
    PartFolder(elsewhere(target)).discard()
    assert not list(target.iterdir())
