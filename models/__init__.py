"""torch nn.Modules only, each state-dict compatible with its published checkpoint (no I/O, no CLI)."""
