# The jobs image: Ray's own image plus `distill-operator[jobs]` (torch, transformers,
# DeepSpeed, the workloads). RayJob clusters (spec.ray.image) and the router Deployment
# (spec.launch.router.image, the operator's DISTILL_JOBS_IMAGE) run it.
#   docker build -f images/jobs.Dockerfile -t ghcr.io/distill-dev/distill-jobs:0.1.0 .
# For GPU nodes build FROM the -gpu variant (CUDA runtime); DeepSpeed compiles its ops
# on first use (TORCH_EXTENSIONS_DIR), which needs nvcc: take a CUDA devel base, or
# pre-build them with DS_BUILD_OPS=1 in a devel stage.
ARG RAY_IMAGE=rayproject/ray:2.60.0-py311
FROM ${RAY_IMAGE}
WORKDIR /home/ray/distill
COPY --chown=ray:users pyproject.toml requirements.lock ./
COPY --chown=ray:users operator ./operator
COPY --chown=ray:users jobs ./jobs
RUN pip install --no-cache-dir -c requirements.lock ".[jobs]"
# Models and data come from the artifact store (spec.artifacts.uri), never from a hub.
ENV HF_HUB_OFFLINE=1 TORCH_EXTENSIONS_DIR=/tmp/torch-extensions
# Ray's images run as uid 1000 (ray), as the router pod's securityContext expects.
USER 1000
