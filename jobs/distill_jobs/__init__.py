"""Stage workloads of distill-operator.

Each stage that runs work is a module here, runnable alone with ``python -m`` and
launched by the operator as one Ray job per attempt. This package never imports
kopf or kubernetes: it runs inside Ray clusters.
"""
