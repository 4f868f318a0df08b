"""Serving formats a finished build can be handed to (Triton Inference Server model repositories)."""
