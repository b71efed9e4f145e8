"""Run directories on object storage: `--run_dir=s3://bucket/prefix`.

`uri` turns a run directory into a filesystem and a root (credentials and endpoint from the
environment); `sync` mirrors parts of a run between the object store and the local staging
folder every stage reads and writes.
"""
