"""The SPFEM evaluation protocol as data: which clips are real test data, which edits to generate.

For each test actor A (MEAD M003 M009 W029 M012 M030 W015; RAVDESS 01–06) the clips of every
(actor, emotion) group are split 90 %/10 % with a fixed seed (:func:`spfem_cli.datasets.split`).
The test clips are (a) the real frames of their emotion and (b) the sources of the edits: each test
clip of A is edited to every other of NED's 7 emotions E, once per protocol:

- ``inter-id``: the reference is a clip of emotion E of the same actor A (training split);
- ``cross-id``: the reference is a clip of emotion E of the mapped actor (MEAD M003←W015, …;
  RAVDESS 01←06, …).

The reference clip is the strongest available: MEAD level 3 before 2 before 1, then by clip number.

Generated-folder layout (a mirror of the protocol, what ``--generated DIR`` must contain)::

    DIR/inter-id/<actor>/<target emotion>/<source key>.mp4
    DIR/cross-id/<actor>/<target emotion>/<source key>.mp4

with ``<actor>`` = ``M003`` … or ``Actor_01`` …, and ``<source key>`` = MEAD
``<emotion>_level_<k>_<clip>`` (e.g. ``neutral_level_1_001``) or the RAVDESS file stem
(e.g. ``01-01-01-01-01-01-01``). Each generated video keeps the source's audio track and starts at the
source's frame 0 (the ``spfem-ned`` LSE preset drops frames 0–1 itself, as CDRL's frame lists, which
start at source frame 2, do). ``Plan.jobs`` and ``Plan.real`` follow the data set's test-actor order and
sorted clip keys: the order CSIM draws its frames in.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from spfem_cli.datasets.mead import MEAD_CROSS_ID, MEAD_TEST_ACTORS, scan_mead
from spfem_cli.datasets.ravdess import RAVDESS_CROSS_ID, RAVDESS_TEST_ACTORS, scan_ravdess
from spfem_cli.datasets.split import split_train_test
from spfem_cli.emotions import EMOTIONS
from spfem_cli.errors import SpfemError

PROTOCOLS = ("inter-id", "cross-id")
SPLIT_SEED = 0
TEST_FRACTION = 0.1


@dataclass(frozen=True)
class Clip:
    """One data-set video in protocol terms."""

    actor: str
    emotion: str
    key: str            # file-safe, unique within the actor
    video: Path
    audio: Path | None  # separate audio file (MEAD), else None: the video's own track
    rank: tuple = ()    # sort key for picking references (strongest first)


@dataclass(frozen=True)
class Job:
    protocol: str
    actor: str
    target: str
    source: Clip
    reference: Clip

    @property
    def relpath(self) -> Path:
        return Path(self.protocol) / self.actor / self.target / f"{self.source.key}.mp4"


@dataclass
class Plan:
    dataset: str
    real: dict[tuple[str, str], list[Clip]]          # (actor, emotion) → test clips
    jobs: list[Job]
    notes: list[str] = field(default_factory=list)
    split_seed: int = SPLIT_SEED

    @property
    def emotions(self) -> list[str]:
        present = {e for _, e in self.real}
        return [e for e in EMOTIONS if e in present]

    @property
    def actors(self) -> list[str]:
        return sorted({a for a, _ in self.real})


def mead_clips(root: Path) -> list[Clip]:
    try:
        clips = scan_mead(root)
    except FileNotFoundError as exc:
        raise SpfemError(str(exc)) from None
    return [Clip(c.actor, c.emotion, f"{c.emotion}_level_{c.level}_{c.clip}", c.video, c.audio, (-c.level, c.clip))
            for c in clips if c.emotion in EMOTIONS]


def ravdess_actor(n: int) -> str:
    return f"Actor_{n:02d}"


def ravdess_clips(root: Path) -> list[Clip]:
    try:
        clips = scan_ravdess(root)
    except FileNotFoundError as exc:
        raise SpfemError(str(exc)) from None
    return [Clip(ravdess_actor(c.actor), c.emotion, c.key, c.video, None, (-c.intensity, c.statement, c.repetition))
            for c in clips if c.emotion in EMOTIONS]


def dataset_spec(dataset: str) -> tuple[tuple[str, ...], dict[str, str]]:
    """Test actors and the cross-ID map (actor → reference actor) with actor names as folders spell them."""
    if dataset == "mead":
        return MEAD_TEST_ACTORS, dict(MEAD_CROSS_ID)
    if dataset == "ravdess":
        return (tuple(ravdess_actor(a) for a in RAVDESS_TEST_ACTORS),
                {ravdess_actor(a): ravdess_actor(b) for a, b in RAVDESS_CROSS_ID.items()})
    raise SpfemError(f"unknown data set '{dataset}'; choose mead or ravdess")


def build_plan(dataset: str, root: Path, *, actors: tuple[str, ...] | None = None, max_sources: int | None = None,
               seed: int = SPLIT_SEED, test_fraction: float = TEST_FRACTION) -> Plan:
    """Split the test actors' clips and list every edit of both protocols."""
    test_actors, cross = dataset_spec(dataset)
    clips = mead_clips(root) if dataset == "mead" else ravdess_clips(root)
    groups: dict[tuple[str, str], list[Clip]] = defaultdict(list)
    for clip in clips:
        groups[(clip.actor, clip.emotion)].append(clip)
    train: dict[tuple[str, str], list[Clip]] = {}
    test: dict[tuple[str, str], list[Clip]] = {}
    for key, members in sorted(groups.items()):
        members.sort(key=lambda c: c.key)
        if len(members) == 1:        # nothing to split: the clip is test data and no same-actor reference exists
            train[key], test[key] = [], members
        else:
            train[key], test[key] = split_train_test(members, test_fraction=test_fraction, seed=seed)
    wanted = [a for a in test_actors if actors is None or a in actors]
    present = {a for a, _ in groups}
    notes = [f"test actor {a} not under the root; skipped" for a in wanted if a not in present]
    wanted = [a for a in wanted if a in present]
    if not wanted:
        raise SpfemError(f"none of the test actors ({', '.join(test_actors)}) is under {root}")
    real = {k: sorted(v, key=lambda c: c.key) for k, v in test.items() if k[0] in wanted}   # CSIM's frame order
    jobs: list[Job] = []
    for actor in wanted:
        sources = sorted((c for (a, _), v in test.items() if a == actor for c in v), key=lambda c: c.key)
        if max_sources is not None:
            sources = sources[:max_sources]
        for protocol in PROTOCOLS:
            ref_actor = actor if protocol == "inter-id" else cross[actor]
            for target in EMOTIONS:
                if (actor, target) not in real:
                    continue
                pool = train.get((ref_actor, target), [])
                if not pool and protocol == "cross-id":
                    pool = test.get((ref_actor, target), [])
                if not pool:
                    notes.append(f"{protocol}: no {target} reference clip of {ref_actor}; {actor}→{target} skipped")
                    continue
                reference = min(pool, key=lambda c: (c.rank, c.key))
                jobs += [Job(protocol, actor, target, s, reference) for s in sources if s.emotion != target]
    return Plan(dataset, real, jobs, notes, seed)
