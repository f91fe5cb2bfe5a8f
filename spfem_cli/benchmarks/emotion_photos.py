"""Does the edit read as its emotion on faces nobody tuned on? Portrait photos, judged by the recogniser.

The emotion bench's eight talking clips are held out from the recipe search, but they have been looked at
and scored for many changes. Photos are a fresh set of faces and the other input users give
(``spfem edit face.jpg -e X`` gives a photo): LivePortrait's example pictures (MIT; not in the repository),
the ones with a human face: photographs, paintings and one 3-D cartoon of many ages and both sexes. None
was used to choose a recipe or a weight.

For each photo (``$SPFEM_BENCH_PHOTOS``: a folder or a comma list; default :data:`PORTRAITS` in
:data:`DEFAULT_PHOTOS_DIR`, else the bundled sample's face) and each judged emotion, the photo is edited
by the real ``spfem edit`` pipeline (warp backend, default intensity, an output of the input's format as a
user gets it) and the FER-2013 recogniser reads source and output: the rise of P(target), and whether the
target is the top-1 label. A photo has no speech, so there is no mouth to check; a photo in which no face
is found is left out and counted.

``python -m spfem_cli.benchmarks emotion_photos`` writes the rows.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spfem_cli.benchmarks.emotion import JUDGED_EMOTIONS, listed_files, top1_margin
from spfem_cli.benchmarks.runner import BenchRow

AREA = "emotion_photos"
DEFAULT_PHOTOS_DIR = Path("/work/clips/stills")
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")
# LivePortrait's example pictures with a human face (assets/examples/source/*.jpg and driving/*.jpg). Left
# out: the animals (s22 a monkey, s23, s36 and s38 alpacas, s25 and s30–s33 dogs, s39–s41 cats: MediaPipe finds
# a "face" on some of them, and the recogniser reads human faces only) and the terracotta warrior (s6).
PORTRAITS = ("d8", "d9", "d12", "d19", "d30", "d38", "s0", "s1", "s2", "s3", "s4", "s5", "s7", "s8", "s9",
             "s10", "s11", "s12", "s42")


@dataclass(frozen=True)
class PhotoScore:
    """One photo edited to one emotion, as the recogniser reads source and output."""

    photo: str
    emotion: str
    p_source: float
    p_output: float
    top_source: str
    top_output: str
    margin: float            # P(target) − the strongest other class's, after the edit (> 0: top-1)

    @property
    def rise(self) -> float:
        return self.p_output - self.p_source

    @property
    def hit(self) -> bool:
        return self.top_output == self.emotion


def bench_photos(spec: str | None = None) -> list[Path]:
    """Photos named by ``spec`` or ``$SPFEM_BENCH_PHOTOS`` (:func:`listed_files`), by default :data:`PORTRAITS`."""
    spec = spec if spec is not None else os.environ.get("SPFEM_BENCH_PHOTOS", "")
    return listed_files(spec, DEFAULT_PHOTOS_DIR, PHOTO_SUFFIXES, PORTRAITS)


def score_photo(photo: Path, emotion: str, workdir: Path) -> PhotoScore | None:
    """Edit ``photo`` to ``emotion`` (into ``workdir``) and read both; None when no face is found in it."""
    from spfem_cli.edit.pipeline import EditRequest, edit_video
    from spfem_cli.edit.targets import EditTarget

    output = Path(workdir) / f"{photo.stem}.{emotion}{photo.suffix}"
    result = edit_video(EditRequest(Path(photo), output, EditTarget(emotion=emotion), backend="warp",
                                    tracker="mediapipe", progress=False, overwrite=True, allow_no_face=True))
    before, after = result.perceived_source, result.perceived_output
    if result.valid_frames == 0 or before is None or after is None:
        return None
    return PhotoScore(photo.stem, emotion, before.prob_of(emotion), after.prob_of(emotion), before.label, after.label,
                      top1_margin(after.mean, emotion))


def score_photos(photos: list[Path], emotions: tuple[str, ...], workdir: Path) -> tuple[list[PhotoScore], list[str]]:
    """Every photo edited to every emotion: the scores, and the photos left out as faceless."""
    scores, skipped = [], []
    for photo in photos:
        for emotion in emotions:
            got = score_photo(photo, emotion, workdir)
            if got is None:
                skipped.append(photo.stem)
                break
            scores.append(got)
    return scores, skipped


def summary_rows(scores: list[PhotoScore], where: str, skipped: list[str]) -> list[BenchRow]:
    """Per emotion: the mean rise of P(target), the photos where it is top-1, and each photo's reading."""
    rows = []
    left_out = f"; no face found in {', '.join(skipped)} (left out)" if skipped else ""
    for emotion in dict.fromkeys(s.emotion for s in scores):
        group = [s for s in scores if s.emotion == emotion]
        per_photo = ", ".join(f"{s.photo} {s.top_source}→{s.top_output} {s.margin:+.2f}" for s in group)
        rows.append(BenchRow(AREA, f"{emotion}: mean rise of P({emotion}), {where}", float(np.mean([s.rise for s in group])),
                             "ΔP", f"target top-1 after edit on {sum(s.hit for s in group)}/{len(group)} photos{left_out}; "
                             f"per photo (top-1 before→after, P(target) − best other after): {per_photo}"))
    return rows


def sample_photo(workdir: Path) -> Path:
    """The bundled sample's face as a photo (when no portraits are there)."""
    import cv2

    from spfem_cli.demo.sample import render_frame

    path = Path(workdir) / "sample.png"
    cv2.imwrite(str(path), cv2.cvtColor(render_frame(0.0, 0.0), cv2.COLOR_RGB2BGR))
    return path


def run() -> list[BenchRow]:
    photos = bench_photos()
    with tempfile.TemporaryDirectory() as tmp:
        if photos:
            where = f"{len(photos)} portrait photos nobody tuned on"
        else:
            photos = [sample_photo(Path(tmp))]
            where = "bundled sample photo only (no portraits: set SPFEM_BENCH_PHOTOS)"
        scores, skipped = score_photos(photos, JUDGED_EMOTIONS, Path(tmp))
    return summary_rows(scores, where, skipped)
