"""`openwit audit`: answers about an output directory, read from its ledger only."""
from __future__ import annotations

from openwit.pipeline import ledger

SUMMARY_COLUMNS = ["uid", "revision", "status", "stage", "reason"]


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
    return "\n".join(lines)
