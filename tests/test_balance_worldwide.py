"""Per-language balancing (issue 23 part 3): one t per language from English's tail share."""
import json

import numpy as np
import pytest

from openwit.pipeline.beam.balancing import balance_summary, pool_threshold, write_entry_stats
from openwit.pipeline.stages.balance import (
    Thresholds, balance_record, count_entries, keep_probability, language_thresholds, phase_threshold, tail_share,
    threshold_for_share,
)
from openwit.schemas.record import DROPPED, Record

# (language, entries, Zipf exponent, pairs): languages of different sizes and shapes
WORLD = [("en", 400, 1.1, 60_000), ("de", 300, 1.3, 25_000), ("ja", 250, 0.9, 12_000), ("sw", 40, 1.0, 900)]


def world_ranges():
    ranges, first = {}, 0
    for language, size, _, _ in WORLD:
        ranges[language] = (first, first + size)
        first += size
    return ranges


def zipf_pool(seed=0, entries_per_pair=(1, 2, 3)):
    """Records of a multilingual Zipf pool: each caption matches 1-3 entries of its own language."""
    rng = np.random.default_rng(seed)
    ranges, records = world_ranges(), []
    for language, size, exponent, pairs in WORLD:
        weights = 1.0 / np.arange(1, size + 1) ** exponent
        first = ranges[language][0]
        for i in range(pairs):
            n = int(rng.choice(entries_per_pair))
            ids = tuple(sorted({first + int(k) for k in rng.choice(size, n, p=weights / weights.sum())}))
            records.append(Record(uid=f"{language}{i}", url=f"http://{language}.test/{i}.jpg", caption=f"{language} {i}",
                                  source=f"pool:{language}:{i}", language=language, entry_ids=ids))
    return records


def test_thresholds_map_each_id_to_its_languages_t():
    t = Thresholds(("en", "de", "ja"), (0, 10, 25), (100.0, 40.0, 7.0))
    assert t.at([0, 9, 10, 24, 25, 999]).tolist() == [100, 100, 40, 40, 7, 7]
    assert t.scaled(2.0).values == (200.0, 80.0, 14.0) and t.of("de") == 40.0
    assert phase_threshold(t, "pre", 1.5).values == (150.0, 60.0, 10.5)
    assert phase_threshold(t, "final", 1.5) is t
    counts = np.zeros(30, np.int64)
    counts[[5, 12, 26]] = 200
    assert keep_probability([5], counts, t) == pytest.approx(0.5)
    assert keep_probability([12], counts, t) == pytest.approx(0.2)
    assert keep_probability([26], counts, t) == pytest.approx(7 / 200)
    with pytest.raises(ValueError, match="rise from 0"):
        Thresholds(("en", "de"), (0, 0), (1.0, 2.0))
    with pytest.raises(ValueError, match="one language"):
        Thresholds(("en",), (0, 5), (1.0, 2.0))


def test_each_language_gets_the_smallest_t_that_reaches_englishs_tail_share():
    counts = count_entries([r.entry_ids for r in zipf_pool()], sum(size for _, size, _, _ in WORLD))
    ranges = world_ranges()
    thresholds = language_thresholds(counts, ranges, english_threshold=300)
    english = counts[slice(*ranges["en"])]
    target = tail_share(english, 300)
    assert 0.05 < target < 0.95  # a real tail, not a degenerate one
    assert thresholds.of("en") == 300  # English keeps the t it was given
    for language, (first, end) in ranges.items():
        if language == "en":
            continue
        c, t = counts[first:end], int(thresholds.of(language))
        assert tail_share(c, t) >= target > tail_share(c, t - 1), language
        # with hundreds of matched entries the share lands close to English's
        if (c > 0).sum() >= 200:
            assert tail_share(c, t) == pytest.approx(target, abs=0.02), language
    # languages differ in size, so their t differ: one global t would not give equal tails
    assert len({thresholds.of(language) for language in ranges}) == len(ranges)


def test_kept_counts_per_language_and_entry_lie_in_the_binomial_band():
    records = zipf_pool(seed=1)
    vocab = sum(size for _, size, _, _ in WORLD)
    counts = count_entries([r.entry_ids for r in records], vocab)
    thresholds = language_thresholds(counts, world_ranges(), english_threshold=300)
    expected, variance = np.zeros(vocab), np.zeros(vocab)
    kept = []
    for r in records:
        p = keep_probability(r.entry_ids, counts, thresholds)
        for entry in r.entry_ids:
            expected[entry] += p
            variance[entry] += p * (1 - p)
        if balance_record(r, counts, thresholds, seed=7).status != DROPPED:
            kept.append(r.entry_ids)
    kept_counts = count_entries(kept, vocab)
    band = 4 * np.sqrt(variance) + 1e-9
    outside = np.nonzero(np.abs(kept_counts - expected) > band)[0]
    assert outside.size == 0, [(int(e), int(kept_counts[e]), expected[e]) for e in outside[:5]]
    # per language: the head is capped (its own captions kept at about t / count), and every
    # pair holding an entry under t is kept (p = 1), so the tail's counts are kept exactly
    for language, (first, end) in world_ranges().items():
        t = thresholds.of(language)
        head = first + int(np.argmax(counts[first:end]))
        alone = [r for r in records if r.entry_ids == (head,)]
        kept_alone = sum(balance_record(r, counts, thresholds, seed=7).status != DROPPED for r in alone)
        rate = t / counts[head]
        assert rate < 0.5 and abs(kept_alone - rate * len(alone)) < 4 * np.sqrt(len(alone) * rate * (1 - rate)) + 1
        tail = [e for e in range(first, end) if 0 < counts[e] < t]
        assert tail and all(kept_counts[e] == counts[e] for e in tail), language


def test_a_language_without_matches_and_a_pool_without_english():
    counts = np.array([0, 0, 0, 5, 1, 1, 0, 0], np.int64)
    ranges = {"en": (0, 3), "de": (3, 6), "fr": (6, 8)}
    t = language_thresholds(counts, ranges, english_threshold=4)
    # no English match: the target is the whole pool's share at t = 4 (2 of 7 matches)
    assert t.of("en") == 4 and t.of("fr") == 4  # nothing matched in fr: English's t
    assert tail_share(counts[3:6], int(t.of("de"))) >= 2 / 7
    # a target share of 0 (every English entry at or above t): t is the smallest matched count
    assert threshold_for_share(np.array([9, 3, 0, 12]), 0.0, fallback=50) == 3


def test_pool_threshold_and_balance_json_report_every_language(tmp_path):
    records = zipf_pool(seed=2)
    ranges = world_ranges()
    vocab = sum(size for _, size, _, _ in WORLD)
    counts = count_entries([r.entry_ids for r in records], vocab)
    english_only = pool_threshold(counts[:400], 300, None)
    assert english_only == 300
    thresholds = pool_threshold(counts, 300, None, ranges)
    assert isinstance(thresholds, Thresholds) and thresholds.languages == tuple(ranges)
    # --tail-fraction picks English's t from English's counts, then the others follow
    by_fraction = pool_threshold(counts, 300, 0.3, ranges)
    assert tail_share(counts[:400], int(by_fraction.of("en"))) >= 0.3
    names = [f"{language}:{i}" for language, (first, end) in ranges.items() for i in range(end - first)]
    summary = write_entry_stats(str(tmp_path), names, counts, counts, counts // 2, thresholds, 1.5, None)
    written = json.loads((tmp_path / "stats" / "balance.json").read_text())
    assert written == json.loads(json.dumps(summary))
    assert written["rule"] == "fixed+per_language_tail_share" and written["threshold"] == 300
    assert set(written["languages"]) == set(ranges)
    for language, (first, end) in ranges.items():
        entry = written["languages"][language]
        assert entry["threshold"] == thresholds.of(language)
        assert entry["matches_in_pool"] == int(counts[first:end].sum())
        assert entry["tail_share"] >= written["tail_share_target"]
        assert entry["matches_kept_final"] == int((counts[first:end] // 2).sum())
    # an English-only run's balance.json is unchanged: one t, no languages
    assert "languages" not in balance_summary(counts[:400], 300, 1.5, None)
