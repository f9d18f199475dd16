# The operator image: kopf + the Kubernetes client + the stage machine. No torch, no Ray
# workers: `distill_operator` never imports them, so the image stays small.
#   docker build -f images/operator.Dockerfile -t ghcr.io/distill-dev/distill-operator:0.1.0 .
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml requirements.lock ./
COPY operator ./operator
COPY jobs ./jobs
# The lock pins every version the tests ran with; -c applies it to this extra only.
RUN pip install --no-cache-dir --prefix=/install -c requirements.lock ".[operator]"

FROM python:3.11-slim
COPY --from=build /install /usr/local
# The chart runs it as 65532 with a read-only root filesystem and /tmp as an emptyDir.
ENV HOME=/tmp PYTHONUNBUFFERED=1
USER 65532:65532
ENTRYPOINT ["python", "-m", "distill_operator"]
