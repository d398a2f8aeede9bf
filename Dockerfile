# The operator image used by charts/ferry. No torch, no model code: the model
# server has its own image (inference-server/Dockerfile).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
COPY --from=build /install /usr/local
USER 65532:65532
ENTRYPOINT ["ferry"]
CMD ["run"]
