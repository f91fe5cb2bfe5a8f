"""Face tracking: per-frame landmarkers behind one interface, temporal clean-up, :class:`FaceTrack`."""

from spfem_cli.face.tracking.base import Detection, FaceTrack, Tracker
from spfem_cli.face.tracking.temporal import TemporalConfig
from spfem_cli.face.tracking.track import TRACKERS, get_tracker, track_video

__all__ = ["Detection", "FaceTrack", "TRACKERS", "TemporalConfig", "Tracker", "get_tracker", "track_video"]
