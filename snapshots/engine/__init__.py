"""The import engine, one job per module.

- `context`: what a load step is given (connection, table, options, cancel, progress).
- `target`: where rows go and what `--mode auto` means (`resolve_target`).
- `columns`: matching a file's columns to the table, type overrides and inference passes.
- `merge`: the staging table and the upsert merge's SQL.
"""
