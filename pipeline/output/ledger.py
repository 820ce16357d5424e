"""The ledger: one terminal record per candidate, as Parquet parts.

It is an append-only log. Every row carries a `revision`; the row with the highest revision
per uid is that candidate's current state (later runs append takedown and retry rows,
through `append_rows` at `next_revision`).
Rows are partitioned by a keyed hash of the uid into a fixed number of parts and sorted
inside each part, so the ledger's bytes do not depend on the runner or the worker count.
"""
from __future__ import annotations

import io
import os
from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from openwit.pipeline.common.keyed import bucket
from openwit.pipeline.output import files, layout
from openwit.schemas.reasons import STAGES
from openwit.schemas.record import KEPT, LEDGER_SCHEMA, Record, ledger_row


def ledger_part(uid: str, n_parts: int) -> int:
    return bucket(uid, b"openwit-ledger", n_parts)


def write_ledger_part(ledger_dir: str, part: int, records: list[Record], revision: int = 0,
                      recorded_at=None) -> str:
    rows = sorted((ledger_row(r, revision, recorded_at) for r in records), key=lambda row: row["uid"])
    table = pa.Table.from_pylist(rows, schema=LEDGER_SCHEMA)
    out = io.BytesIO()
    pq.write_table(table, out)
    path = layout.ledger_part_path(ledger_dir, part, revision)
    files.write_atomically(path, out.getvalue())
    return path


# --- later revisions: takedown, --retry-failed and --extend append rows ----------------


def next_revision(table: pa.Table) -> int:
    """The revision the next change to the ledger writes its rows at."""
    return max(table.column("revision").to_pylist()) + 1


def to_record(row: dict) -> Record:
    """A ledger row as a Record again (to write a superseding row from it)."""
    fields = {k: v for k, v in row.items() if k not in ("revision", "recorded_at")}
    return Record(**fields)


def append_rows(out_dir: str, records: list, revision: int, recorded_at: str) -> None:
    """New rows go to new files of the new revision, partitioned like the run's ledger."""
    ledger_dir = layout.ledger_dir(out_dir)
    first = layout.revision_prefix(0)
    parts = len([p for p in os.listdir(ledger_dir) if p.startswith(first)]) or 1
    by_part = {}
    for record in records:
        by_part.setdefault(ledger_part(record.uid, parts), []).append(record)
    for part, group in sorted(by_part.items()):
        write_ledger_part(ledger_dir, part, group, revision, recorded_at)


# The columns the funnel and the drop reasons need.
STATE_COLUMNS = ["uid", "revision", "status", "stage", "reason"]


def outcomes(out_dir: str) -> dict:
    """The manifest's view of the ledger's current state: the funnel and the drop reasons."""
    state = current_state(read_ledger(out_dir, columns=STATE_COLUMNS))
    return {"funnel": dict(funnel(state)),
            "drop_reasons": [{"stage": s, "reason": r, "count": n} for s, r, n in drop_reasons(state)]}


def read_ledger(out_dir: str, columns=None) -> pa.Table:
    """Every ledger row ever written (all revisions)."""
    paths = files.matching(layout.ledger_pattern(out_dir))
    if not paths:
        raise FileNotFoundError(f"no ledger under {layout.ledger_dir(out_dir)}")
    # promote: parts written before a column was added (recorded_at) read as nulls there
    return pa.concat_tables((files.read_parquet(p, columns) for p in paths), promote_options="default")


def current_state(table: pa.Table) -> pa.Table:
    """The latest row per uid: the log's current state."""
    if "revision" not in table.column_names or "uid" not in table.column_names:
        raise ValueError("current_state needs the uid and revision columns")
    ordered = table.sort_by([("uid", "ascending"), ("revision", "descending")])
    uids = ordered.column("uid").to_pylist()
    first = [i for i, uid in enumerate(uids) if i == 0 or uid != uids[i - 1]]
    return ordered.take(pa.array(first, type=pa.int64()))


def funnel(state: pa.Table) -> list[tuple[str, int]]:
    """(step, candidates still in) after each stage, in pipeline order, from the ledger."""
    kept = pc.sum(pc.equal(state.column("status"), KEPT)).as_py() or 0
    return funnel_from_drops(state.num_rows, Counter(state.column("stage").to_pylist()), kept)


def funnel_from_drops(total: int, dropped_per_stage: dict, kept: int) -> list[tuple[str, int]]:
    steps, remaining = [("candidates", total)], total
    for stage in STAGES:
        remaining -= dropped_per_stage.get(stage, 0)
        steps.append((stage, remaining))
    steps.append(("kept", kept))
    return steps


def drop_reasons(state: pa.Table) -> list[tuple[str, str, int]]:
    """(stage, reason, count) for every drop reason, most frequent first."""
    pairs = Counter(
        (stage, reason)
        for stage, reason in zip(state.column("stage").to_pylist(), state.column("reason").to_pylist())
        if reason
    )
    return [(stage, reason, n) for (stage, reason), n in sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))]
