"""The import engine, one job per module (`snapshots.importer.Importer` ties them together:
hash, lock, decide, claim, load, record).

- `context`: what a load step is given (`LoadContext`: connection, table, options, cancel,
  progress) and the job and outcome of a load path (`LoadJob`, `Loaded`).
- `target`: where rows go; `resolve_target` is the only meaning of --mode (auto included).
- `decide`: skip, conflict or claim a file whose name was imported before (importer, sync).
- `connections`: an importer's connection and the helpers of a parallel load.
- `transaction`: the start of a file's one transaction (`begin`) and its end (`finish`).
- `loads`: the one interface of the load paths in that transaction (`choose_load`).
- `append`, `upsert` (with `merge`, its SQL), `snapshots.rejects` (--on-error skip),
  `parallel` (parts over several connections), `dryrun`: the load paths.
- `copy`: the COPY stream and the checks on its bytes (the hot path).
- `columns`: the file's columns against the table, --type, inference passes.
- `failure`: a failed import's record. `result`: `FileResult` and the words it says.
"""
