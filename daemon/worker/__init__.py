"""Code that runs inside the mlx child processes: the only place mlx is imported.

Each module is run as ``python -m daemon.worker.<name> REQUEST.json``: the parent
writes a JSON request, the child writes JSON lines of progress/metrics and a
JSON result file. The parent never reads the child's console output.
"""
