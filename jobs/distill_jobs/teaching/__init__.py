"""Parts of the Teach workload (:mod:`distill_jobs.teach`)."""
