"""`openwit audit summary` and `trace`: answers about an output directory, read from its
ledger (and, for the balancing effect and a trace, its stats and manifest)."""
from __future__ import annotations

from openwit.pipeline.output import files, layout, ledger
from openwit.pipeline.output.manifest import read_manifest
from openwit.schemas.record import DROPPED, KEPT

SUMMARY_COLUMNS = ["uid", "revision", "status", "stage", "reason", "language"]


def summary_text(out_dir: str, top: int = 10) -> str:
    state = ledger.current_state(ledger.read_ledger(out_dir, columns=SUMMARY_COLUMNS))
    steps = ledger.funnel(state)
    total = steps[0][1] or 1
    lines = [f"{'step':<15}{'remaining':>10}{'share':>9}"]
    lines += [f"{step:<15}{count:>10}{100 * count / total:>8.1f}%" for step, count in steps]
    reasons = ledger.drop_reasons(state)
    if reasons:
        lines += ["", f"{'stage':<15}{'drop reason':<22}{'count':>7}"]
        lines += [f"{stage:<15}{reason:<22}{n:>7}" for stage, reason, n in reasons[:top]]
    balance, _ = balancing_effect(out_dir)
    return "\n".join(lines + language_lines(state, top, balance) + balancing_lines(balance))


def language_counts(state) -> list[tuple[str, int, int]]:
    """(language, candidates, kept) by language ID, most candidates first."""
    counts = {}
    for language, status in zip(state.column("language").to_pylist(), state.column("status").to_pylist()):
        seen, kept = counts.get(language or "-", (0, 0))
        counts[language or "-"] = (seen + 1, kept + (status == KEPT))
    return sorted(((lang, n, k) for lang, (n, k) in counts.items()), key=lambda t: (-t[1], t[0]))


FUNNEL_COLUMNS = ("candidates", "before_balance", "balanced_out", "after_balance", "kept")
BEFORE_BALANCE = ("read", "text", "match", "url_dedup")


def language_funnel(state) -> list[tuple[str, dict]]:
    """Per language ID, most candidates first: candidates, dropped before balancing (read,
    text rules, no entry or no list for the language, duplicate URL), balanced out (either
    phase), dropped after it (download to the writer), and kept. A record still in flight (an
    interrupted run) counts as a candidate only."""
    rows: dict[str, dict] = {}
    columns = (state.column(name).to_pylist() for name in ("language", "status", "stage", "reason"))
    for language, status, stage, reason in zip(*columns):
        row = rows.setdefault(language or "-", dict.fromkeys(FUNNEL_COLUMNS, 0))
        row["candidates"] += 1
        if status == KEPT:
            row["kept"] += 1
        elif status == DROPPED:
            row[drop_column(stage, reason)] += 1
    return sorted(rows.items(), key=lambda item: (-item[1]["candidates"], item[0]))


def drop_column(stage: str, reason) -> str:
    """The FUNNEL_COLUMNS column a drop counts in (the explorer counts the same way)."""
    if (reason or "").startswith("balanced_out"):
        return "balanced_out"
    return "before_balance" if stage in BEFORE_BALANCE else "after_balance"


def language_lines(state, top: int, balance: dict = None) -> list[str]:
    """The per-language funnel; with a worldwide run's balance.json, each language's t."""
    from openwit.pipeline.stages.match import list_for

    by_language = (balance or {}).get("languages")
    header = f"{'language':<10}" + "".join(f"{name:>15}" for name in FUNNEL_COLUMNS)
    lines = ["", header + (f"{'t':>9}" if by_language else "")]
    for language, row in language_funnel(state)[:top]:
        line = f"{language:<10}" + "".join(f"{row[name]:>15}" for name in FUNNEL_COLUMNS)
        if by_language:
            t = by_language.get(list_for(language, by_language), {}).get("threshold")
            line += f"{t if t is not None else '-':>9}"
        lines.append(line)
    return lines


def entry_threshold(balance: dict, entry_name: str) -> float:
    """An entry's t: its language's in a worldwide run ("de:hund"), else the run's t."""
    by_language = balance.get("languages")
    if not by_language:
        return balance["threshold"]
    language = entry_name.partition(":")[0]
    return by_language.get(language, {}).get("threshold", balance["threshold"])


def balancing_effect(out_dir: str) -> tuple[dict, list]:
    """(t, how it was chosen, the tail share and how the head was flattened; the per-entry
    rows of stats/entries.parquet), or ({}, []) when the run wrote no balancing stats."""
    balance = files.read_json(layout.balance_path(out_dir))
    if balance is None:
        return {}, []
    entries = files.read_parquet(layout.entry_stats_path(out_dir)).to_pylist()
    balance["entries_at_cap_final"] = sum(1 for e in entries if e["kept_final"] >= entry_threshold(balance, e["entry"]))
    balance["largest_entry_pool"] = max((e["matches_in_pool"] for e in entries), default=0)
    balance["largest_entry_final"] = max((e["kept_final"] for e in entries), default=0)
    return balance, entries


def balancing_lines(b: dict) -> list[str]:
    if not b:
        return []
    lines = ["", f"balancing: t = {b['threshold']} ({b['rule']}), tail share {b['tail_share']:.1%}",
             f"  entries matched {b['entries_matched']}, over t in the pool {b['entries_over_threshold']}, "
             f"at t in the shards {b['entries_at_cap_final']}",
             f"  largest entry: {b['largest_entry_pool']} matches in the pool -> {b['largest_entry_final']} kept"]
    if b.get("languages"):
        lines += [f"  per language (t giving each English's tail share {b['tail_share_target']:.1%}):",
                  f"  {'list':<8}{'t':>9}{'tail share':>12}{'matches':>10}{'entries':>9}{'over t':>8}{'kept':>9}"]
        for language, e in sorted(b["languages"].items(), key=lambda item: -item[1]["matches_in_pool"]):
            lines.append(f"  {language:<8}{e['threshold']:>9}{e['tail_share']:>12.1%}{e['matches_in_pool']:>10}"
                         f"{e['entries_matched']:>9}{e['entries_over_threshold']:>8}{e.get('matches_kept_final', 0):>9}")
    return lines


# --- trace: everything known about one candidate ----------------------------------------


def find_uids(table, query: str) -> list[str]:
    """uids a query names: a uid, an image URL (as written or normalised), or SHARD/KEY."""
    from openwit.pipeline.common.urls import normalize_url

    uids = table.column("uid").to_pylist()
    if query in uids:
        return [query]
    rows = table.select(["uid", "url", "shard", "key"]).to_pylist()
    if "://" in query:
        wanted = normalize_url(query)
        return sorted({r["uid"] for r in rows if r["url"] == query or normalize_url(r["url"] or "") == wanted})
    shard, _, key = query.replace(layout.TAR, "").rpartition("/")
    return sorted({r["uid"] for r in rows if r["shard"] == shard and r["key"] == key})


def describe_row(row: dict, vocab: list) -> list[str]:
    if row.get("language_score") is not None:
        row = {**row, "language_score": round(row["language_score"], 4)}
    lines = [f"  revision {row['revision']}: {row['status']}"
             + (f" at {row['stage']} ({row['reason']})" if row["status"] == DROPPED else "")]
    for name, value in row.items():
        if value in (None, [], "") or name in ("revision", "status", "stage", "reason", "uid"):
            continue
        if name == "entry_ids" and vocab:
            value = ", ".join(f"{i} {vocab[i]!r}" for i in value if 0 <= i < len(vocab))
        lines.append(f"    {name:<16}{value}")
    return lines


def trace_text(out_dir: str, query: str) -> str:
    table = ledger.read_ledger(out_dir)
    uids = find_uids(table, query)
    if not uids:
        raise LookupError(f"no candidate in {out_dir} matches {query!r} (give a uid, an image URL or SHARD/KEY)")
    vocab = load_run_vocab(out_dir)
    rows = table.to_pylist()
    lines = []
    for uid in uids:
        history = sorted((r for r in rows if r["uid"] == uid), key=lambda r: r["revision"])
        lines.append(f"uid {uid}")
        for row in history:
            lines += describe_row(row, vocab)
        copies = sorted(r["uid"] for r in rows if r["duplicate_of"] == uid)
        if copies:
            lines.append(f"  survivor of {len(copies)} duplicate(s): {', '.join(copies)}")
    return "\n".join(lines)


def load_run_vocab(out_dir: str) -> list:
    """The run's entry names, to name entry ids: --vocab's entries, or with --worldwide
    "lang:entry" over English and the recorded lists (English only if those lists changed);
    empty if the --vocab file is gone or unreadable."""
    from openwit.pipeline.stages.match import read_vocab, vocab_sha256
    from openwit.query_lists.worldwide import read_sections

    try:
        vocab = read_manifest(out_dir)["vocab"]
        english = read_vocab(vocab["path"])
        worldwide = vocab.get("worldwide")
        if not worldwide:
            return english
    except (OSError, KeyError, TypeError, ValueError):
        return []
    names = [f"en:{entry}" for entry in english]
    try:  # a changed or missing list: its ids stay unnamed, English's are still named
        if vocab_sha256(worldwide["path"]) == worldwide.get("sha256"):
            names += [f"{code}:{entry}" for code, entries in read_sections(worldwide["path"]) for entry in entries]
    except (OSError, KeyError, TypeError, ValueError, EOFError):
        pass
    return names
