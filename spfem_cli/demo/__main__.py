"""`make demo`: edit the bundled real-face sample and say where the results are.

Writes into ./demo_out (its own folder; files there are replaced on every run): the sample clip,
the edited clip for each emotion asked for (default: happy and sad), a source | edited side-by-side
video, the mouth-opening plot that shows the speech was kept, and one contact sheet (source | every
emotion on the same frames, labelled) to judge the expressions at a glance.
"""

from __future__ import annotations

import sys
from pathlib import Path

from spfem_cli.demo.sample import make_talking_clip
from spfem_cli.edit.contact_sheet import emotion_sheet, save_png
from spfem_cli.edit.pipeline import EditRequest, edit_video
from spfem_cli.edit.report import mouth_summary
from spfem_cli.edit.targets import EditTarget
from spfem_cli.emotions import EDIT_EMOTIONS
from spfem_cli.progress import console as progress_console

OUT = Path("demo_out")
SHEET_FRAMES = 25      # the contact sheet edits only the first second: every emotion in a few seconds


def main(emotions: list[str] | None = None) -> None:
    console = progress_console(stderr=False)   # never wraps paths, plain when piped
    emotions = emotions or ["happy", "sad"]
    OUT.mkdir(exist_ok=True)
    console.print("[bold]spfem demo[/]: building the real-face talking sample (astronaut photo, known mouth signal)")
    sample = make_talking_clip(OUT / "sample.mp4", seconds=4.0, fps=25)
    for emotion in emotions:
        result = edit_video(EditRequest(
            sample.path, OUT / f"sample.{emotion}.mp4", EditTarget(emotion=emotion), backend="auto",
            side_by_side=OUT / f"sample.{emotion}.side_by_side.mp4", plot=OUT / f"sample.{emotion}.mouth.png",
            overwrite=True))
        console.print(f"[green]{emotion}[/]: {result.output}  side-by-side: {result.side_by_side}  "
                      f"plot: {result.plot}  (mouth opening source vs output {mouth_summary(result)})")
    sheet, _ = emotion_sheet(sample.path, EDIT_EMOTIONS, frames=3, length=SHEET_FRAMES)
    path = save_png(OUT / "sample.contact_sheet.png", sheet)
    console.print(f"contact sheet (source | {' | '.join(EDIT_EMOTIONS)}): {path}")
    console.print(f"\nAll demo files are in {OUT.resolve()}")


if __name__ == "__main__":
    from spfem_cli.native_logs import native_logs_filtered

    with native_logs_filtered():     # MediaPipe's C++ log lines stay off the terminal, as in `spfem`
        main(sys.argv[1:] or None)
