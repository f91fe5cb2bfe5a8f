"""Edit backends: each sub-package owns the encode → manipulate → render stages of one way to edit a face.

``warp/`` (embedded, CPU) and ``ned/`` (neural, with its training) each expose one backend class
(``WarpBackend``, ``NedBackend``) with ``encode`` and ``manipulate`` stages and a render stage;
:func:`spfem_cli.edit.pipeline.choose_backend` is the only place that names them. Backends share
``spfem_cli.face`` (tracking, alignment, paste-back) and never import each other.
"""
