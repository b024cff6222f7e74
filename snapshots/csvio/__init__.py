"""Everything about a snapshot file that needs no database, one job a module.

- names: which files are snapshots, their dates, the order they load in
- streams: a file's bytes, whole (decompressed, hashed as read) or a span, in chunks
- hashing: where a file is hashed (sha256_file; hash_file adds a parallel load's cut points)
- cutpoints: where a parallel load cuts a file, at record boundaries
- encoding: PostgreSQL encodings and Python codecs, byte order marks, decoding into lines
- dialect: CsvOptions (how the CSV is written) and delimiter detection
- quoting: the quotes COPY would read differently from RFC 4180, and their errors
- header: the first record, checked and normalised into column names
- inference: each column's narrowest lossless type

Pure functions and small classes: the import engine wires them to PostgreSQL. Import from
the module that does the job; this package re-exports nothing.
"""

import csv

# A field may be as large as PostgreSQL allows (1 GB); the csv module stops at 128 KiB. Here,
# so that whichever of these modules is imported first, every csv reader in them has it.
csv.field_size_limit(2**31 - 1)
