FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY protocol protocol
COPY gateway gateway
COPY storage storage
COPY api api
COPY simulator simulator
COPY gp8 gp8
RUN pip install --no-cache-dir .
# Boxes (TCP), REST API
EXPOSE 5027 8000
ENTRYPOINT ["gp8"]
CMD ["serve"]
