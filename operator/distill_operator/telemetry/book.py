"""What the operator last saw of each project: the projects gauge counts their phase and
stage, and log lines about a project take its stage from here."""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict

# Stages are remembered past a project's loop, so that the last lines about a deleted
# project (kopf's own, after the loop has stopped) still name its stage; this many at most.
MAX_REMEMBERED_STAGES = 4096


class ProjectBook:
    """The last-seen phase and stage of every project the operator runs a loop for.

    Thread-safe: the metrics server reads it from its own thread while the event loop
    writes it. Stages are kept by uid, so a project re-created under the same name does
    not inherit its predecessor's stage.
    """

    def __init__(self) -> None:
        self._seen: dict[str, tuple[str, str | None]] = {}
        self._stages: OrderedDict[str, str | None] = OrderedDict()
        self._lock = threading.Lock()

    def see(self, project: str, *, uid: str, phase: str, stage: str | None) -> None:
        """Record ``project`` (``namespace/name``, with ``uid``) as in ``phase`` at ``stage``."""
        with self._lock:
            self._seen[project] = (phase, stage)
            self._stages[uid] = stage
            self._stages.move_to_end(uid)
            while len(self._stages) > MAX_REMEMBERED_STAGES:
                self._stages.popitem(last=False)

    def forget(self, project: str) -> None:
        """The operator no longer runs ``project`` (deleted, or no longer watched)."""
        with self._lock:
            self._seen.pop(project, None)

    def stage_of(self, uid: str) -> str | None:
        """The stage of the project with ``uid`` when last seen; None before its first."""
        with self._lock:
            return self._stages.get(uid)

    def counts(self) -> Counter[tuple[str, str]]:
        """Projects per (phase, stage); a project with no stage yet counts under ``""``."""
        with self._lock:
            seen = list(self._seen.values())
        return Counter((phase, stage or "") for phase, stage in seen)
