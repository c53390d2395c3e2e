"""Emotional audio-driven talking faces from one portrait with diffusion (DREAM-Talk, arXiv 2312.13578)."""
