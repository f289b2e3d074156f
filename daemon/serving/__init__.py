"""Serving hand-off: the promoted model really reaches the server, or the promotion is rolled back.

Modules:

- :mod:`daemon.serving.server`: the managed server (a command template, default
  ``mlx_lm.server`` from this venv on a loopback address) and the supervisor that
  keeps it serving whatever ``current`` resolves to (restart with backoff,
  pause while training).
- :mod:`daemon.serving.hook`: the reload-command hook for servers nightshift
  does not own.
- :mod:`daemon.serving.probes`: verification: a sample of the night's eval
  prompts replayed against the server and compared with recorded replies.
- :mod:`daemon.serving.handoff`: hand-off, verification and automatic rollback
  through the promotion's own swap and registry path.
- :mod:`daemon.serving.releases`: the release list and retention (``gc``).

The scheduler process never imports mlx: the server is a child process.
"""
