"""Launch's router: the student and the teacher behind one OpenAI chat-completions API.

The operator steers the router through ``routing.json`` (:class:`~distill_jobs.contract.
Routing`): which student, and which rollout step (teacher, shadow, canary, full). The
router polls it, loads a new student beside the one serving, switches once it is loaded,
and counts what it did per routing revision in Prometheus metrics, which the operator
reads to advance or roll back a step.

- :mod:`.chat`: the OpenAI wire format (requests in, completions and errors out).
- :mod:`.confidence`: how sure the student is, from its own token probabilities.
- :mod:`.decisions`: which model a request goes to, and which are compared.
- :mod:`.students`: a loaded student, batched, and when it may be unloaded.
- :mod:`.teacher`: the project's teacher (a local model or an API) asked per request.
- :mod:`.live`: the routing in force, polled and switched without a restart.
- :mod:`.metrics`: the Prometheus counters the operator reads.
- :mod:`.dispatch`: one request from routing decision to answer, with fallbacks.
- :mod:`.app`: the aiohttp server (``/v1/chat/completions``, ``/v1/models``,
  ``/healthz``, ``/metrics``).

:mod:`distill_jobs.serve` is the workload that runs it until SIGTERM.
"""

from distill_jobs.serving.app import Router, RouterSettings, RouterThread
from distill_jobs.serving.teacher import open_router_teacher

__all__ = ["Router", "RouterSettings", "RouterThread", "open_router_teacher"]
