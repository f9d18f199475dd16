"""Investigate and Look: models judged on Source's held-out set (``distill_jobs.evaluate``).

- :mod:`.excerpts`: the stage inputs' spec excerpts, parsed with the API's own models.
- :mod:`.held_out`: Source's held-out prompts, which of them the bar's metric can score,
  and the per-answer scores.
- :mod:`.answering`: answers from a local model (as is, or quantized) on a worker with
  the serving resources, or from the teacher's backend.
- :mod:`.alternatives`: Investigate, one cheaper alternative per job, judged by the bar.
- :mod:`.slices`: Look's slice table (student vs teacher) and whether it passes.
- :mod:`.diagnosis`: which stage a failing or weak slice table points to.
- :mod:`.report`: Look's disagreements and the ConfigMap summary.
- :mod:`.look`: Look, the chosen student against the teacher, slice by slice.
- :mod:`.outcome`: what a stage found, before it becomes a StageResult.
"""
