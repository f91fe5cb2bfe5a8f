"""Evaluation outputs: a Markdown table in the layout of the ASCCL paper's Table 1, JSON, CSV, a bar chart.

Table rows are the emotions plus "Avg." (mean over the emotions); for each protocol the columns are
FAD↓, LSE-D↓, CSIM↑ and LSE-C↑. A second, separate table gives the emotion-recognition accuracy of
the edits (the FER-2013 recogniser's top-1 is the target, as EAMM/EAT report it) beside the same
recogniser's accuracy on the data set's real clips of that emotion (its ceiling). Every file is
written atomically.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from spfem_cli.video import AtomicOutput

METRICS = (("fad", "FAD↓"), ("lse_d", "LSE-D↓"), ("csim", "CSIM↑"), ("lse_c", "LSE-C↑"))
EMOTION_METRICS = (("emotion_acc", "Acc_emo↑"), ("emotion_acc_real", "Acc_emo real"))
PROTOCOL_TITLES = {"inter-id": "Inter-ID", "cross-id": "Cross-ID"}


def _fmt(value: float | None) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def rows(results: dict) -> list[tuple[str, str, dict]]:
    """(protocol, emotion or 'Avg.', metrics) in table order."""
    out = []
    for protocol, block in results["protocols"].items():
        for emotion, metrics in block["per_emotion"].items():
            out.append((protocol, emotion, metrics))
        out.append((protocol, "Avg.", block["avg"]))
    return out


def _table(results: dict, metrics: tuple[tuple[str, str], ...]) -> list[str]:
    protocols = list(results["protocols"])
    emotions = list(dict.fromkeys(e for p in protocols for e in results["protocols"][p]["per_emotion"]))
    titles = [f"{PROTOCOL_TITLES.get(p, p)} {label}" for p in protocols for _, label in metrics]
    lines = ["| Emotion | " + " | ".join(titles) + " |", "|---|" + "---:|" * (len(protocols) * len(metrics))]
    for emotion in emotions + ["Avg."]:
        cells = []
        for p in protocols:
            block = results["protocols"][p]
            values = block["avg"] if emotion == "Avg." else block["per_emotion"].get(emotion, {})
            cells += [_fmt(values.get(key)) for key, _ in metrics]
        name = emotion if emotion == "Avg." else emotion.capitalize()
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def markdown_table(results: dict) -> str:
    """The papers' table, then (when measured) the emotion-recognition table."""
    lines = [f"**{results['dataset'].upper()}** ({results.get('lse_preset', '')} LSE preset)", "", *_table(results, METRICS)]
    if any(m.get("emotion_acc") is not None or m.get("emotion_acc_real") is not None
           for block in results["protocols"].values() for m in block["per_emotion"].values()):
        lines += ["", "Emotion recognition (FER-2013 mini-Xception, top-1 of the mean over a video's frames is the target; "
                      "'real': the data set's own clips of that emotion)", "", *_table(results, EMOTION_METRICS)]
    return "\n".join(lines) + "\n"


def csv_text(results: dict) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    keys = [k for k, _ in METRICS + EMOTION_METRICS]
    writer.writerow(["protocol", "emotion", *keys[:len(METRICS)], "n_videos", *keys[len(METRICS):]])
    for protocol, emotion, metrics in rows(results):
        values = ["" if metrics.get(k) is None else metrics[k] for k in keys]
        writer.writerow([protocol, emotion, *values[:len(METRICS)], metrics.get("n_videos", ""), *values[len(METRICS):]])
    return buf.getvalue()


def bar_chart(results: dict, path: Path) -> Path:
    """One panel per metric, bars per emotion (and Avg.), one colour per protocol."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    protocols = list(results["protocols"])
    emotions = list(dict.fromkeys(e for p in protocols for e in results["protocols"][p]["per_emotion"])) + ["Avg."]
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS), 3.6))
    x = np.arange(len(emotions))
    width = 0.8 / max(len(protocols), 1)
    for ax, (key, label) in zip(axes, METRICS, strict=True):
        for i, p in enumerate(protocols):
            block = results["protocols"][p]
            vals = [(block["avg"] if e == "Avg." else block["per_emotion"].get(e, {})).get(key) for e in emotions]
            vals = [np.nan if v is None else v for v in vals]
            ax.bar(x + (i - (len(protocols) - 1) / 2) * width, vals, width, label=PROTOCOL_TITLES.get(p, p))
        ax.set_title(label)
        ax.set_xticks(x, [e[:4] for e in emotions], rotation=45)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{results['dataset'].upper()} evaluation")
    fig.tight_layout()
    with AtomicOutput(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path


def write_reports(results: dict, out: Path, stem: str = "eval") -> dict[str, Path]:
    """``<stem>.md``, ``.json``, ``.csv``, ``.png`` under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / f"{stem}.md", "json": out / f"{stem}.json", "csv": out / f"{stem}.csv",
             "plot": out / f"{stem}.png"}
    for key, text in (("markdown", markdown_table(results)), ("json", json.dumps(results, indent=2, default=str) + "\n"),
                      ("csv", csv_text(results))):
        with AtomicOutput(paths[key]) as tmp:
            tmp.write_text(text)
    bar_chart(results, paths["plot"])
    return paths
