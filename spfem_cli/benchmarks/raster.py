"""Benchmarks of the 3D face model area: rasteriser at 256² for a FLAME-sized mesh, and the reconstruct stage.

Both on CPU. The mesh is the synthetic FLAME stand-in (models.flame.synthetic_flame, grid 71: 5046 vertices,
9800 triangles, close to FLAME's 5023 / 9976) because the real FLAME file is gated; DECA runs with random
weights in the published layout (speed does not depend on the values).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from spfem_cli.benchmarks.runner import BenchRow, timeit

AREA = "raster"


def _mesh_frames(batch: int):
    from models.flame import FLAME, synthetic_flame
    from spfem_cli.backends.ned.render3d import nmfc_colours, project
    from spfem_cli.face.align import TEMPLATE_68

    flame = FLAME(*synthetic_flame(TEMPLATE_68, grid=71)).eval()
    pose = torch.zeros(batch, 6)
    pose[:, 1] = torch.linspace(-0.3, 0.3, batch)
    pose[:, 3] = 0.15
    with torch.no_grad():
        verts = flame(torch.zeros(batch, 100), torch.zeros(batch, 50), pose).vertices
    cam = torch.tensor([[7.0, 0.0, 0.0]]).expand(batch, -1)
    mats = torch.tensor([[[256 / 224, 0.0, 0.0], [0.0, 256 / 224, 0.0]]]).expand(batch, -1, -1)
    return flame, project(verts, cam, mats), nmfc_colours(flame.v_template)


def run() -> list[BenchRow]:
    from models.raster import interpolate, rasterize

    rows = []
    for batch in (1, 8):
        flame, pix, colours = _mesh_frames(batch)
        n_v, n_f = flame.v_template.shape[0], flame.faces.shape[0]

        def step(pix=pix, flame=flame, colours=colours):
            frags = rasterize(pix, flame.faces, 256)
            return interpolate(frags, flame.faces, colours)

        sec = timeit(step, repeat=5)
        note = f"CPU, synthetic FLAME-sized mesh {n_v} v / {n_f} tris"
        rows.append(BenchRow(AREA, f"rasterise + NMFC 256², batch {batch} (wall)", sec * 1000 / batch, "ms/frame", note))
        rows.append(BenchRow(AREA, f"rasterise + NMFC 256², batch {batch} (process CPU time)",
                             timeit(step, clock=time.process_time) * 1000 / batch, "ms/frame",
                             note + "; CPU time is robust to a shared, loaded machine"))
    rows.extend(_reconstruct_rows())
    return rows


def _reconstruct_rows() -> list[BenchRow]:
    from models.deca import DECA
    from spfem_cli.backends.ned.reconstruct import reconstruct_frames
    from spfem_cli.demo.sample import make_talking_clip
    from spfem_cli.face.tracking import track_video

    torch.manual_seed(0)
    deca = DECA().eval()
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "clip.mp4"
        make_talking_clip(video, seconds=1.0, fps=25, size=(360, 480))
        track = track_video(video, "mediapipe", progress=False)
        n = int(np.sum(track.valid))

        def step():
            return reconstruct_frames(video, track, deca, torch.device("cpu"), batch_size=16)

        wall = timeit(step, repeat=3)
        cpu = timeit(step, repeat=3, clock=time.process_time)
    what = "reconstruct (decode + DECA crop + coarse & detail encoders)"
    note = f"CPU, random DECA weights in the published layout, {n} frames 480×360, batch 16, tracking excluded"
    return [BenchRow(AREA, f"{what} (wall)", n / wall, "frames/s", note),
            BenchRow(AREA, f"{what} (per process CPU second)", n / cpu, "frames/s", note)]
