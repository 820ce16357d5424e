"""`openwit plot METRICS.jsonl -o curves.html`: the training curves of a run (loss, learning
rate, temperature, samples/s, data wait, and evaluations) as one self-contained page of
inline SVG line charts."""
from __future__ import annotations

import argparse
import html
import json

WIDTH, HEIGHT, LEFT, BOTTOM = 720, 220, 60, 24
CURVES = [("loss", "loss"), ("lr", "learning rate"), ("logit_scale", "logit scale (1/temperature)"),
          ("samples_per_s", "samples/s"), ("data_wait", "fraction of the step waiting for data")]


def read_metrics(path: str) -> tuple[list[dict], list[dict]]:
    """(per-step rows, evaluation rows) of a metrics JSONL file."""
    steps, evals = [], []
    with open(path) as f:
        for line in f:
            row = json.loads(line)
            (evals if "eval" in row else steps).append(row)
    return steps, evals


def line_chart(chart_id: str, title: str, points: list[tuple[float, float]]) -> str:
    """One polyline on linear axes, with the min and max of each axis labelled."""
    if not points:
        return ""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1
    w, h = WIDTH - LEFT - 10, HEIGHT - BOTTOM - 10

    def at(x, y):
        return f"{LEFT + w * (x - x0) / (x1 - x0):.1f},{10 + h - h * (y - y0) / (y1 - y0):.1f}"

    line = " ".join(at(x, y) for x, y in points)
    return (f'<h3>{html.escape(title)}</h3><svg id="{chart_id}" width="{WIDTH}" height="{HEIGHT}" '
            f'xmlns="http://www.w3.org/2000/svg"><polyline points="{line}" fill="none" stroke="#4a7fb5" '
            f'stroke-width="1.5"/><line x1="{LEFT}" y1="{10 + h}" x2="{LEFT + w}" y2="{10 + h}" stroke="#444"/>'
            f'<line x1="{LEFT}" y1="10" x2="{LEFT}" y2="{10 + h}" stroke="#444"/>'
            f'<text x="{LEFT - 4}" y="14" text-anchor="end" font-size="11">{y1:.3g}</text>'
            f'<text x="{LEFT - 4}" y="{10 + h}" text-anchor="end" font-size="11">{y0:.3g}</text>'
            f'<text x="{LEFT}" y="{HEIGHT - 4}" font-size="11">step {x0:g}</text>'
            f'<text x="{LEFT + w}" y="{HEIGHT - 4}" text-anchor="end" font-size="11">{x1:g}</text></svg>')


def build_page(path: str) -> str:
    steps, evals = read_metrics(path)
    charts = [line_chart(f"curve-{key}", title, [(r["step"], r[key]) for r in steps if key in r])
              for key, title in CURVES]
    eval_keys = sorted({k for row in evals for k, v in row["eval"].items() if isinstance(v, float)})
    charts += [line_chart(f"eval-{key.replace('@', '-')}", f"eval: {key}",
                          [(r["step"], r["eval"][key]) for r in evals if key in r["eval"]]) for key in eval_keys]
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"/><title>openwit training curves</title>'
            f'</head><body style="font-family:sans-serif"><h1>{html.escape(path)}</h1>{"".join(charts)}</body></html>')


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="openwit plot", description=__doc__.splitlines()[0])
    parser.add_argument("metrics", help="the JSONL file openwit train writes (CKPT.jsonl)")
    parser.add_argument("-o", "--output", required=True, help="curves.html to write")
    args = parser.parse_args(argv)
    with open(args.output, "w", encoding="utf-8") as f:
        f.write(build_page(args.metrics))
    print(f"curves -> {args.output}")
    return 0
