# One image, two services: Cloud Run sets FUNCTION_TARGET to "ingress" or "collector".
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Optional dependency groups of pyproject.toml to install: the database drivers the company's data
# map needs (postgres: psycopg for PostgreSQL and Cloud SQL for PostgreSQL).
ARG PIP_EXTRAS=postgres

WORKDIR /app

# Only what the package needs (.dockerignore keeps everything else out of the build context).
# pip byte-compiles at build time: the non-root user cannot write .pyc files at run time, and
# compiled modules start faster.
COPY pyproject.toml README.md ./
COPY services/ services/
RUN pip install ".${PIP_EXTRAS:+[$PIP_EXTRAS]}" \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin mineos

USER 10001

# Shell form so ${FUNCTION_TARGET} and ${PORT} expand; exec makes functions-framework PID 1, so it
# receives Cloud Run's SIGTERM.
CMD exec functions-framework --source=services/mineos_integration/main.py --target=${FUNCTION_TARGET} --port=${PORT:-8080}
