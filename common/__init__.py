"""The shared kernel of `training` and `hub`: user errors and exit codes, atomic writes and the
ownership marker, settings files (YAML + `--set`), the command runner, the one Hub-error mapping, and
telling a Hub id from a local path.

It imports neither `training` nor `hub` (nor torch, transformers or datasets), so every package can use it.
"""
