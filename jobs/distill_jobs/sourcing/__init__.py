"""The pieces of the Source workload (:mod:`distill_jobs.source`), one concern each.

- :mod:`.settings`: the ``spec.source`` excerpt the workload reads, and its errors.
- :mod:`.files`: traffic URIs to a list of readable files (fsspec).
- :mod:`.prompts`: one raw record to a prompt, its slice and its near-duplicate signature
  (pure functions, also run inside Ray Data tasks).
- :mod:`.reading`: the files to one Ray dataset of parsed rows.
- :mod:`.selection`: de-duplication, the stratified split and critical-slice coverage
  (pure functions of the parsed rows' light columns).
- :mod:`.report`: the slice table, the report artifact and the result's metrics.
"""
