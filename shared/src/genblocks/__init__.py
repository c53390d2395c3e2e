"""genblocks: the small shared core of the ByteDance portrait-papers monorepo.

Blocks used identically by two or more paper packages: configuration loading now; diffusion, GAN/3-D, training and face
blocks in later releases. It never imports a paper package.
"""

from genblocks.config import ConfigError, config_to_yaml, load_config, merge_config

__version__ = "0.1.0"

__all__ = ["ConfigError", "__version__", "config_to_yaml", "load_config", "merge_config"]
