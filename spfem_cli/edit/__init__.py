"""The edit pipeline: decode → track → backend stages → paste back → encode, plus targets and the result report."""
