# retape: the audit engine and the `retape` command.
FROM python:3.11-slim
WORKDIR /app
COPY requirements.lock pyproject.toml README.md ./
RUN pip install --no-cache-dir --require-hashes -r requirements.lock
COPY shared ./shared
COPY producers ./producers
COPY workers ./workers
COPY setup.py ./
# gcc only while the compiled parts (Cython) are built; /cache: worker-llm's answer cache volume
# (a new named volume takes this owner).
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && pip install --no-cache-dir --no-deps . \
    && apt-get purge -y gcc libc6-dev && apt-get autoremove -y && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home retape && mkdir -p /cache && chown retape:retape /cache
# ops/produce.sh is the compose `producer` service's loop (/app/ops/produce.sh).
COPY ops ./ops
USER retape
ENTRYPOINT ["retape"]
CMD ["--help"]
