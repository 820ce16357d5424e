import pyarrow as pa
import pytest

from openwit.schemas.reasons import REASONS, STAGES, reason
from openwit.schemas.record import (
    DROPPED, LEDGER_FIELDS, LEDGER_SCHEMA, Record, drop, drop_internal_error, ledger_row, make_uid, sample_metadata,
)


def test_every_reason_names_a_known_stage_and_is_described():
    for r in REASONS.values():
        assert r.stage in STAGES or r.name == "internal_error", r
        assert r.description and isinstance(r.transient, bool)


def test_drop_takes_the_stage_from_the_registry():
    record = Record(uid="u1", url="http://127.0.0.1/a.jpg", caption="a red circle", source="in.csv:0")
    dropped = drop(record, "timeout", "5s")
    assert (dropped.status, dropped.stage, dropped.reason, dropped.detail) == (DROPPED, "download", "timeout", "5s")
    assert record.status == "active"  # records are immutable: stages return new ones


def test_unknown_reason_is_an_error():
    with pytest.raises(KeyError, match="unknown drop reason"):
        reason("because")


def test_uid_is_stable_and_unique_per_row():
    assert make_uid("a.parquet", 3) == make_uid("a.parquet", 3)
    uids = {make_uid(name, row) for name in ("a.parquet", "b.parquet") for row in range(1000)}
    assert len(uids) == 2000
    assert all(len(u) == 20 and "." not in u for u in uids)


def test_ledger_row_fits_the_ledger_schema():
    record = Record(uid="u1", url="http://x/a.jpg", caption="c d", source="in.csv:0", entry_ids=(3, 5),
                    width=64, height=48, image_path="/tmp/staged.jpg")
    row = ledger_row(record, revision=2)
    assert list(row) == LEDGER_FIELDS and "image_path" not in row
    table = pa.Table.from_pylist([row], schema=LEDGER_SCHEMA)
    assert table.column("entry_ids").to_pylist() == [[3, 5]]
    assert table.column("revision").to_pylist() == [2]
    assert sample_metadata(record)["entry_ids"] == [3, 5]


def test_internal_errors_name_the_stage_and_carry_no_addresses():
    record = Record(uid="u1", url="http://127.0.0.1/a.jpg", caption="a red circle", source="in.csv:0")
    dropped = drop_internal_error(record, "text", TypeError("bad object <_io.BytesIO object at 0x7f3a2b>"))
    assert (dropped.stage, dropped.reason) == ("text", "internal_error")
    assert dropped.detail == "TypeError: bad object <_io.BytesIO object>"
    assert reason("internal_error").transient
