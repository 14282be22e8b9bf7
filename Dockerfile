# pushgw: one image for gateway, worker and simulator (pick with the command).
# The base is any image with Python >= 3.11 whose `python` and `pip` are on PATH (pip may install into its
# environment): the official slim image by default; `make image-check` passes one it makes from Debian.
ARG PYTHON_IMAGE=python:3.12-slim

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway gateway
COPY workers workers
COPY wechatsim wechatsim
COPY loadtest loadtest
# py-spy: `py-spy dump --pid PID` for a stuck process (docs/runbook.md, PushgwEventLoopLag)
RUN pip wheel --no-cache-dir --wheel-dir /wheels . "py-spy>=0.4,<1"

FROM ${PYTHON_IMAGE}
RUN useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin pushgw
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 10001
ENV PYTHONUNBUFFERED=1
EXPOSE 8080 8090 9108
# /healthz of the gateway (8080); a worker or simulator container overrides this with its own port.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status != 200)"]
ENTRYPOINT ["pushgw"]
CMD ["gateway", "--host", "0.0.0.0", "--port", "8080"]
