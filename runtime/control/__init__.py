"""pit's control plane: what `pit status` and `pit profile-inspector` read from live hosts."""
