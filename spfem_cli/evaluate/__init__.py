"""Evaluation: FAD, CSIM, LSE-D/LSE-C, landmark distances and image metrics on the SPFEM protocols.

Each metric is a plain function (:mod:`.fad`, :mod:`.csim`, :mod:`.lse`, :mod:`.landmarks`,
:mod:`.image`); :mod:`.protocol` turns a data set into jobs, :mod:`.run` orchestrates and caches,
:mod:`.report` writes the table, JSON, CSV and the plot.
"""
