"""Diffusion blocks around diffusers: reference attention, temporal attention, ControlNet sums, sampling, checkpoints."""
