# The compose example's worker: python:3.11-slim, the PyPI faktory client, worker.py.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip install --no-cache-dir faktory==1.0.0
COPY worker.py /app/worker.py
USER nobody
CMD ["python", "/app/worker.py"]
