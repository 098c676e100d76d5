"""caso: edit images with Stable Diffusion through classifier-learned semantic embeddings.

Importing this package is cheap: torch and diffusers load only when a function needs them.
"""

__version__ = "0.1.0"
