"""bpbreid.viz."""
