# pushgw: one image for gateway, worker and simulator (pick with the command).
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway gateway
COPY workers workers
COPY wechatsim wechatsim
COPY loadtest loadtest
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.12-slim
RUN useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin pushgw
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 10001
ENV PYTHONUNBUFFERED=1
EXPOSE 8080 9108
ENTRYPOINT ["pushgw"]
CMD ["gateway", "--host", "0.0.0.0", "--port", "8080"]
