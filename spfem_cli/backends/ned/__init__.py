"""The neural `ned` backend: DECA/FLAME 3D expression, NED's translator and person-specific renderer, and their training."""
