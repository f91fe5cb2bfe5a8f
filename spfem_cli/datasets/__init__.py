"""Data-set readers (MEAD, RAVDESS) in their real folder layouts, protocol constants and splits."""
