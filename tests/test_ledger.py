import pyarrow as pa

from openwit.pipeline.output.ledger import current_state, drop_reasons, funnel, ledger_part, read_ledger, write_ledger_part
from openwit.schemas.record import Record, drop


def rec(uid, **kw):
    return Record(uid=uid, url=f"http://127.0.0.1/{uid}", caption="a cat", source=f"f:{uid}", **kw)


def test_current_state_takes_the_latest_revision(tmp_path):
    (tmp_path / "ledger").mkdir()
    first = [drop(rec("a"), "timeout"), rec("b", status="kept", shard="00000", key="b"), drop(rec("c"), "unmatched")]
    write_ledger_part(str(tmp_path / "ledger"), 0, first, revision=0)
    write_ledger_part(str(tmp_path / "ledger"), 0, [rec("a", status="kept", shard="00001", key="a")], revision=1)
    log = read_ledger(str(tmp_path))
    assert log.num_rows == 4
    state = current_state(log)
    assert state.num_rows == 3
    assert dict(zip(state.column("uid").to_pylist(), state.column("status").to_pylist())) == {
        "a": "kept", "b": "kept", "c": "dropped"}


def test_parts_are_sorted_and_deterministic(tmp_path):
    records = [rec(f"u{i}") for i in range(30)]
    a = write_ledger_part(str(tmp_path), 1, records)
    data = open(a, "rb").read()
    write_ledger_part(str(tmp_path), 1, records[::-1])
    assert open(a, "rb").read() == data
    assert len({ledger_part(r.uid, 4) for r in records}) == 4


def test_funnel_and_reasons():
    state = pa.Table.from_pylist([
        {"status": "dropped", "stage": "match", "reason": "unmatched"},
        {"status": "dropped", "stage": "download", "reason": "timeout"},
        {"status": "dropped", "stage": "download", "reason": "timeout"},
        {"status": "kept", "stage": None, "reason": None},
    ])
    steps = dict(funnel(state))
    assert steps["candidates"] == 4 and steps["match"] == 3 and steps["download"] == 1 and steps["kept"] == 1
    assert drop_reasons(state) == [("download", "timeout", 2), ("match", "unmatched", 1)]
