# The prediction service image: gunicorn serving api:app on port 1313 as a non-root user.
# Build stage: install the pinned requirements into a virtual environment.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
COPY requirements.txt /tmp/requirements.txt
# The image serves; the packages only score.py uses are left out.
RUN grep -v "score.py only" /tmp/requirements.txt > /tmp/serving.txt \
 && /opt/venv/bin/python -m pip install --no-cache-dir -r /tmp/serving.txt

# Final stage: the venv, the package and its two entry points, the model; no build tools.
FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PORT=1313 \
    MODEL_DIR=/app/objs \
    DATABASE_URL=sqlite:////tmp/decisions.sqlite3
RUN groupadd --gid 10001 app \
 && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin app
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
COPY ad_purchase/ ad_purchase/
COPY api.py model_utils.py gunicorn.conf.py ./
COPY examples/ examples/
COPY objs/ objs/
USER 10001:10001
EXPOSE 1313
# /health over HTTPS when CERT_FILE is set; the certificate names the service, not 127.0.0.1, so
# it is not checked for this loopback probe.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, ssl, urllib.request; tls = bool(os.environ.get('CERT_FILE')); urllib.request.urlopen('%s://127.0.0.1:%s/health' % ('https' if tls else 'http', os.environ.get('PORT', '1313')), timeout=2, context=ssl._create_unverified_context() if tls else None)"]
CMD ["gunicorn", "--config", "gunicorn.conf.py", "api:app"]
