"""distill-operator: a kopf operator for DistillationProjects (group distill.dev)."""
