# memogrid: the API, its job runner, and (same image) the dask scheduler and workers,
# so every process that runs a task has the same libraries.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, from pyproject.toml alone: this layer stays cached
# until the dependencies change, not whenever the code does.
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['service'] + p['optional-dependencies']['dashboard']))" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# The code, installed without touching the dependencies again.
COPY README.md ./
COPY client ./client
COPY service ./service
COPY migrations ./migrations
COPY deploy/dask.yaml /etc/dask/memogrid.yaml
RUN pip install --no-deps .

# A non-root user owning the data directory (datasets, cache, estimators).
RUN useradd --create-home --uid 10001 memogrid \
 && mkdir -p /data \
 && chown memogrid:memogrid /data
USER memogrid
ENV MEMOGRID_DATA_DIR=/data

EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=5 \
  CMD python -c "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/v1/health', timeout=2).status != 200)"

CMD ["memogrid", "serve", "--host", "0.0.0.0", "--port", "8000"]
