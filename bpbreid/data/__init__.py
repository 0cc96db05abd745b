"""bpbreid.data."""
