"""bpbreid: body part-based occluded person re-identification (BPBReID, WACV 2023)."""

__version__ = "0.1.0"
