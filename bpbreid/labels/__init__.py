"""bpbreid.labels."""
