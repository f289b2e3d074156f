"""nightshift: a nightly LoRA training daemon for local LLMs.

The scheduler/CLI process (this package, minus ``daemon.worker``) never imports
mlx; training, evaluation, fusing and smoke tests run in child processes under
``daemon.worker``.
"""

__version__ = "0.1.0"
