"""The embedded `warp` backend: FACS action-unit prototypes on tracked landmarks, rendered by a mesh warp (CPU, no gated weights)."""
