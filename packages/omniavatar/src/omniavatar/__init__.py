"""Geometry-guided controllable 3D head synthesis (OmniAvatar, CVPR 2023, arXiv 2303.15539) on EG3D with an SDF-based FLAME-aware renderer."""
