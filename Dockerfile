# syntax=docker/dockerfile:1
# The Speaker Grouping ML backend for Label Studio; see README "Deployment" and docker-compose.yml.
#
# Two stages: the builder installs everything into a virtual environment (with a compiler, for
# webrtcvad, which has no wheel); the runtime image copies that environment and nothing else.

FROM python:3.11-slim AS builder

# The CPU build from PyTorch's own index: PyPI's default torch is a several-GB CUDA build.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# setuptools<81: resemblyzer's webrtcvad imports pkg_resources, which setuptools 81 removed.
RUN pip install --upgrade pip "setuptools<81" wheel \
    && pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"

WORKDIR /src
COPY pyproject.toml README.md ./
COPY foundation ./foundation
COPY importers ./importers
COPY ml_backend ./ml_backend
COPY label_config ./label_config
COPY exporters ./exporters
COPY speaker_grouping ./speaker_grouping
COPY bench ./bench
# torch is already there, so the project's "torch>=2.1" keeps the CPU build.
RUN pip install . "gunicorn==27.0.1"


FROM python:3.11-slim

# libgomp: the system OpenMP runtime, for wheels that link it rather than bundle it.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=builder /opt/venv /opt/venv

# A fixed uid so a host folder mounted as MODEL_DIR can be chown'ed to it (10001).
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/app app \
    && mkdir -p /data/models /media \
    && chown app:app /data/models

# One worker, several threads: a project's state and its background refit live in the process,
# so a second worker would keep a second, diverging copy. Label Studio calls /health within 1 s.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MODEL_DIR=/data/models \
    LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=/media \
    HF_HUB_OFFLINE=1 \
    HF_HOME=/data/models/huggingface \
    GUNICORN_CMD_ARGS="--bind=0.0.0.0:9090 --workers=1 --threads=8 --timeout=300 --access-logfile=-"

USER app
WORKDIR /home/app
VOLUME ["/data/models"]
EXPOSE 9090

HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:9090/health', timeout=4).status != 200)"]

# The Flask app factory reads its settings from the environment (ml_backend/config.py).
CMD ["gunicorn", "ml_backend.server:create_app()"]
