# retape: the audit engine and the `retape` command.
FROM python:3.11-slim
WORKDIR /app
COPY requirements.lock pyproject.toml README.md ./
RUN pip install --no-cache-dir --require-hashes -r requirements.lock
COPY shared ./shared
COPY producers ./producers
COPY workers ./workers
# /cache: worker-llm's answer cache volume (a new named volume takes this owner).
RUN pip install --no-cache-dir --no-deps . && useradd --create-home retape \
    && mkdir -p /cache && chown retape:retape /cache
# ops/produce.sh is the compose `producer` service's loop (/app/ops/produce.sh).
COPY ops ./ops
USER retape
ENTRYPOINT ["retape"]
CMD ["--help"]
