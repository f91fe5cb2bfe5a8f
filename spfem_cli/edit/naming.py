"""Where `spfem edit` writes: ``-o FILE``, ``-o DIR/`` (or an existing folder), or next to the input.

Default names are ``<stem>.<tag>.mp4`` (tag = the emotion, ``reference`` or ``timeline``), side-by-side
videos ``<stem>.<tag>.sbs.mp4`` and plots ``<stem>.<tag>.mouth.png``; a photo's edit keeps the photo's
format (``face.jpg`` → ``face.happy.jpg``; a .webp, .bmp or .tiff photo's is a PNG). The container follows the
extension (:data:`spfem_cli.video.CONTAINERS`, :data:`spfem_cli.video.IMAGE_FORMATS`); anything else is refused before any work.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from spfem_cli.errors import SpfemError
from spfem_cli.video import container_format, is_image_file, picture_suffix


def _is_folder(text: str) -> bool:
    return text.endswith(("/", os.sep)) or Path(text).is_dir()


def refuse_plot_of_photo(video: Path) -> None:
    """A mouth plot is over time: refused for a photo (one frame), before any output folder is made."""
    if is_image_file(video):
        raise SpfemError(f"--plot draws the mouth opening over time; {video} is a photo (one frame)")


def resolve_output(video: Path, given: str | None, tag: str, *, kind: str = "video", several: bool = False) -> Path:
    """The output path of one input. ``kind``: ``video`` (``.<tag>.mp4``), ``sbs`` (``.<tag>.sbs.mp4``)
    or ``plot`` (``.<tag>.mouth.png``). A folder given with a trailing slash is created."""
    ext = picture_suffix(video) if is_image_file(video) else ".mp4"
    suffix = {"video": ext, "sbs": f".sbs{ext}", "plot": ".mouth.png"}[kind]
    option = {"video": "-o", "sbs": "--side-by-side", "plot": "--plot"}[kind]
    if kind == "plot":
        refuse_plot_of_photo(video)
    default_name = f"{video.stem}.{tag}{suffix}"
    if given is None:
        return video.with_name(default_name)
    if given == "-":
        raise SpfemError(f"{option} - (standard output) is not supported: MP4/MOV/MKV outputs are written "
                         "to a file and renamed into place when complete; give a file or folder name")
    if _is_folder(given):
        folder = Path(given)
        if folder.exists() and not folder.is_dir():
            raise SpfemError(f"{option} {given}: {folder} exists and is not a folder")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:   # a file on the way (a.mp4/x/), no permission, read-only file system
            raise SpfemError(f"{option} {given}: cannot create the folder {folder} ({exc.strerror})") from None
        return folder / default_name
    if several:
        raise SpfemError(f"{option} {given}: with several inputs give a folder (end it with /)")
    path = Path(given)
    if kind == "plot":
        if path.suffix.lower() != ".png":
            raise SpfemError(f"--plot {given}: the plot is a PNG; end the name in .png")
    else:
        container_format(path)
    return path


def check_distinct(outputs: Sequence[tuple[Path, Path]], inputs: Sequence[Path]) -> None:
    """Refuse a batch in which two outputs are one file (e.g. a/x.mp4 and b/x.mp4 into one folder), or an output
    is another input (``spfem edit *.mp4 --overwrite`` run again: x.mp4's edit is x.happy.mp4, an input).

    ``outputs``: every file the run writes (edit, side-by-side, plot), each with the input it comes from.
    """
    sources = {Path(video).resolve(): video for video in inputs}
    seen: dict[Path, Path] = {}
    for output, video in outputs:
        key = Path(output).resolve()
        if key in sources and sources[key] != video:
            raise SpfemError(f"{video} would write {output}, which is also an input of this run; leave it out "
                             "(e.g. a previous edit) or give an output folder")
        if key in seen:
            raise SpfemError(f"{seen[key]} and {video} would both write {output}; edit them in separate runs "
                             "or give separate output folders")
        seen[key] = video
