"""The job service: the one application layer that the CLI, the workers and the dashboard call.

- `config`: the typed, versioned JobConfig and every default about a job's life
- `service`: submit, list, show, follow, cancel, resume, reap, load a run; claim and finish
- `lease`: lease settings and the LeaseKeeper thread that renews a fenced lease
- `reaper`: recovers jobs whose worker stopped renewing its lease

Nothing here imports torch at module level: read-only front ends stay fast.
"""
