"""Ray launchers: job submission to an existing cluster, and KubeRay RayJobs.

Both sit behind :class:`~distill_operator.launch.base.Launcher`, so the stage machine
never knows which one runs its work.
"""
