"""The neural (`ned`) edit backend: DECA → NED translator → conditioning images → actor renderer.

:func:`spfem_cli.edit.pipeline.edit_video` calls the three stages (``--backend ned``, or ``auto`` when
:func:`missing_weights` is empty):

* :meth:`NedBackend.encode` — DECA codes per frame (cached by ``spfem_cli.backends.ned.reconstruct``) and NED's 51
  expression values (jaw opening + 50 FLAME expression);
* :meth:`NedBackend.manipulate` — :func:`spfem_cli.backends.ned.translate.translate` to a label / reference / timeline;
* :meth:`NedBackend.render_video` — per chunk: FLAME with the *edited* jaw + expression and the source's
  shape / pose / camera → NMFC, detailed shape (DECA detail normals) and eye-gaze images in the aligned 256² frame → the actor's
  renderer (:class:`spfem_cli.backends.ned.neural_render.NeuralRenderer`, sequential with a batched conditioning
  encoder) → the shared Laplacian paste-back → H.264 with the source audio.

The renderer's temporal state is reset at shot cuts and after frames without a face, as NED starts a
new sequence there. Frames without a face pass through unchanged.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from spfem_cli.errors import SpfemError

NED_WEIGHTS = ("deca_model", "flame_generic", "flame_landmark_embedding", "deca_head_template",
               "deca_fixed_displacement", "deca_uv_face_eye_mask", "ned_translator")


def missing_model_weights() -> list[str]:
    """Registry weights of the ned backend not installed here (the actor renderer aside)."""
    from spfem_cli import weights

    return weights.missing(NED_WEIGHTS)


def missing_weights(renderer_dir: Path | None) -> list[str]:
    """What the ned backend lacks on this machine (empty = it can run); used by ``--backend auto``."""
    from models.ned_renderer import find_ned_file

    missing = missing_model_weights()

    if renderer_dir is None or find_ned_file(renderer_dir, "G") is None:
        missing.append("actor renderer (spfem train-renderer VIDEO --out DIR, then --renderer DIR)")
    return missing


def sequence_runs(sel: np.ndarray, cuts: np.ndarray, last_ok: int) -> list[tuple[int, int, bool]]:
    """Split frame indices ``sel`` into runs ``(start, end, reset)``: a gap (no face) or a shot cut starts a new
    renderer sequence (reset); a run continuing from ``last_ok`` (the previous chunk's last frame) keeps the state."""
    starts = [k for k in range(len(sel)) if cuts[sel[k]] or sel[k] != (sel[k - 1] if k else last_ok) + 1]
    bounds = sorted({0, *starts, len(sel)})
    return [(s, e, s in starts) for s, e in zip(bounds[:-1], bounds[1:], strict=True)]


class NedBackend:
    """One object per edit; holds the device, the renderer folder and the translator checkpoint name."""

    name = "ned"

    def __init__(self, renderer_dir: Path, *, device: str = "auto", translator: str = "ned_translator",
                 batch_frames: int = 16, cache_dir: Path | None = None, progress: bool = True,
                 check_weights: bool = True) -> None:
        from spfem_cli.device import pick_device

        missing = missing_weights(renderer_dir) if check_weights else []
        if missing:
            raise SpfemError(f"the ned backend needs: {'; '.join(missing)} (`spfem weights list` says how to get them)")
        self.renderer_dir = Path(renderer_dir)
        self.device = pick_device(device)
        self.translator = translator
        self.batch_frames = batch_frames
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.progress = progress

    def encode(self, video: Path, track):
        """(Reconstruction, ExpressionSeq) of ``video``; DECA runs once per video content (cached)."""
        from spfem_cli.backends.ned.reconstruct import Reconstruction, reconstruct_video
        from spfem_cli.backends.ned.translate import ExpressionSeq
        from spfem_cli.face.preprocess import cache_root

        folder = self.cache_dir or cache_root() / "reconstruct"
        recon = Reconstruction.load(reconstruct_video(Path(video), track, folder, self.device, progress=self.progress))
        return recon, ExpressionSeq.from_reconstruction(recon)

    def manipulate(self, source, target, reference=None, *, seed: int = 0):
        """Edited ExpressionSeq for an ``EditTarget`` (label, reference ExpressionSeq, or timeline)."""
        from spfem_cli.backends.ned.translate import target_from_edit, translate

        tgt = target_from_edit(target, source.fps, reference)
        return translate(source, tgt, float(getattr(target, "intensity", 1.0)), self.translator, seed=seed,
                         device=self.device)

    def render_video(self, video: Path, output: Path, track, recon, edited, *, crf: int = 18, preset: str = "medium",
                     overwrite: bool = False, chunk_size: int = 32, flame=None, deca=None, detail_assets=None,
                     renderer=None, segmenter="auto") -> int:
        """Render every frame, paste back, write ``output`` with the source audio; returns the frame count.

        ``flame`` / ``deca`` / ``detail_assets`` / ``renderer`` (a NeuralRenderer) default to the registry's
        weights and the actor renderer folder; tests pass stand-ins. ``segmenter``: FSGAN's face segmentation
        ("auto": when ``fsgan_segmentation`` is installed, as NED) or None for the FLAME mesh coverage mask.
        """
        from models.deca import DECA
        from models.detail import DetailAssets
        from models.flame import FLAME
        from spfem_cli.backends.ned.neural_render import NeuralRenderer
        from spfem_cli.face.blend import paste_back
        from spfem_cli.face.mask import resolve_segmenter
        from spfem_cli.video import VideoWriter, iter_chunks, probe

        info = probe(Path(video))
        flame = (flame or FLAME.from_registry()).to(self.device).eval()
        self._deca = (deca or DECA.from_registry()).to(self.device).eval()
        self._detail_assets = (detail_assets or DetailAssets.from_registry()).to(self.device)
        renderer = renderer or NeuralRenderer.from_dir(self.renderer_dir, self.device, batch_frames=self.batch_frames)
        self._segmenter = resolve_segmenter(segmenter, self.device)
        pose_edit, exp_edit = edited.to_deca()
        n = len(recon)
        ok_all = recon.valid[:n] & track.valid[:n] & np.isfinite(track.transforms[:n]).all(axis=(1, 2))
        cuts = np.asarray(getattr(track, "cuts", np.zeros(n, bool)), bool)
        done, last_ok = 0, -2
        with VideoWriter(Path(output), info.fps, audio_from=Path(video), crf=crf, preset=preset,
                         overwrite=overwrite) as writer:
            for chunk in iter_chunks(Path(video), chunk_size):
                out = chunk.frames.copy()
                idx = np.arange(chunk.start, chunk.start + len(chunk.frames))
                sel = idx[idx < n]
                sel = sel[ok_all[sel]]
                if len(sel):
                    faces, masks = self._faces(chunk.frames[sel - chunk.start], sel, track, recon, pose_edit,
                                               exp_edit, flame, renderer, cuts, last_ok)
                    for k, i in enumerate(sel):
                        out[i - chunk.start] = paste_back(chunk.frames[i - chunk.start], faces[k],
                                                          track.transforms[i], mask=masks[k])
                    last_ok = int(sel[-1])
                writer.write(out)
                done += len(out)
        return done

    def _faces(self, frames: np.ndarray, sel: np.ndarray, track, recon, pose_edit: np.ndarray, exp_edit: np.ndarray,
               flame, renderer, cuts: np.ndarray, last_ok: int) -> tuple[np.ndarray, np.ndarray]:
        """Aligned 256² faces and soft paste-back masks for the source ``frames`` at indices ``sel`` (runs keep
        the temporal state).

        The face mask is the renderer's mask input and the base of the paste-back alpha, as in NED: FSGAN's
        segmentation of the aligned source frame when installed (what the actor renderer was trained with),
        else the FLAME mesh coverage; NED's soft erosion makes the alpha.
        """
        from spfem_cli.backends.ned.neural_render import pack_conditioning, to_uint8
        from spfem_cli.backends.ned.render3d import render_tracked_frames
        from spfem_cli.face.align import warp_to_aligned
        from spfem_cli.face.mask import mesh_or_segmentation, ned_blend_mask

        imgs = render_tracked_frames(sel, track, recon, flame, deca=self._deca, detail_assets=self._detail_assets,
                                     exp=exp_edit[sel], jaw_opening=pose_edit[sel, 3])
        nmfc, gaze, shape, mask = imgs.to_uint8()
        aligned = np.stack([warp_to_aligned(f, track.transforms[i]) for f, i in zip(frames, sel, strict=True)])
        if self._segmenter is not None:
            mask, _ = mesh_or_segmentation(aligned, mask, self._segmenter, self.device)
        cond = pack_conditioning(nmfc, gaze, shape, mask)
        faces = []
        for s, e, reset in sequence_runs(sel, cuts, last_ok):
            if reset:
                renderer.reset()
            faces.append(renderer.render(cond[s:e]))
        # The generator paints black outside the mask; the soft alpha and the coarse pyramid levels reach a little
        # beyond it, so the source shows there instead of a dark halo.
        rendered = np.where(mask[..., None] > 0, to_uint8(torch.cat(faces)), aligned)
        return rendered, ned_blend_mask(mask)
