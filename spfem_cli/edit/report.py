"""What an edit reports: mouth-opening trajectories of source and output (the visible proof of speech
preservation) and the perceived emotion of both (does the edit read as its target?)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spfem_cli.evaluate.drawn_opening import DrawnOpening
from spfem_cli.evaluate.landmarks import mouth_correlation
from spfem_cli.video import AtomicOutput


def mouth_plot(source_track, output_track, path: Path, *, title: str = "",
               drawn: DrawnOpening | None = None) -> float:
    """Write a PNG of both inner-lip openings over time; returns their correlation. ``drawn``
    (:func:`~spfem_cli.evaluate.drawn_opening.drawn_opening`) adds the edit's opening as drawn in the picture,
    frame by frame: where the re-tracked line strays from the source's and the drawn points do not, the
    tracker read the mouth's new shape as a different opening."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    src, out = source_track.mouth_opening(), output_track.mouth_opening()
    n = min(len(src), len(out))
    src, out = src[:n], out[:n]
    r = mouth_correlation(src, out)
    t = np.arange(n) / float(source_track.fps)
    fig, ax = plt.subplots(figsize=(9, 3.2), dpi=110)
    ax.plot(t, src, label="source", lw=2, color="#1f77b4")
    ax.plot(t, out, label=f"edited, re-tracked (r = {r:.3f})" if np.isfinite(r) else "edited, re-tracked",
            lw=1.5, ls="--", color="#d62728")
    if drawn is not None and np.isfinite(drawn.openings[:n]).any():
        ax.scatter(t, drawn.openings[:n], s=7, color="#2ca02c", zorder=3,
                   label="edited, as drawn (no tracker"
                         + (f"; r = {drawn.correlation:.3f}" if np.isfinite(drawn.correlation) else "")
                         + (f"; peak {drawn.peak_ratio:.2f}× the source's" if np.isfinite(drawn.peak_ratio) else "") + ")")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("inner-lip opening (aligned px)")
    ax.set_title(f"{title}   Pearson r = {r:.3f} (re-tracked)" if np.isfinite(r)
                 else f"{title}   Pearson r: n/a (under 3 frames or no mouth motion)")
    ax.legend(loc="best", fontsize=8, framealpha=0.85)
    fig.tight_layout()
    with AtomicOutput(Path(path), suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return r


def mouth_summary(result) -> str:
    """'r = 0.945 re-tracked, 1.000 as drawn; drawn peak 1.00× the source's': the mouth plot's numbers for a
    summary line (the edit's ``mouth_correlation``, ``drawn_correlation`` and ``drawn_peak_ratio``)."""
    r = result.mouth_correlation
    shown = f"{r:.3f}" if r is not None and np.isfinite(r) else "n/a (needs 3+ frames with a face and a moving mouth)"
    if result.drawn_correlation is not None:
        shown += f" re-tracked, {result.drawn_correlation:.3f} as drawn"
    drawn = "" if result.drawn_peak_ratio is None else f"; drawn peak {result.drawn_peak_ratio:.2f}× the source's"
    return f"r = {shown}{drawn}"


def perception_lines(result, target: str | None) -> list[str]:
    """``intensity auto: …`` (when searched) and ``perceived: neutral 0.81 → happy 0.64`` with P(target)
    when the target is not the top label (FER-2013 recogniser; nothing when it did not run)."""
    lines = [result.auto_intensity.message] if getattr(result, "auto_intensity", None) is not None else []
    src, out = result.perceived_source, result.perceived_output
    if src is None or out is None:
        return lines
    detail = f"FER-2013, {out.frames} frame{'s' if out.frames != 1 else ''}"
    if target and out.label != target and out.prob_of(target) is not None:
        detail = f"P({target}) {src.prob_of(target):.2f} → {out.prob_of(target):.2f}; {detail}"
    return lines + [f"perceived: {src.label} {src.prob:.2f} → {out.label} {out.prob:.2f}  ({detail})"]
