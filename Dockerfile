# One image for every gp8 role (docker-compose.yml runs it as the box gateway, the API and the
# one-shot `gp8 admin` tasks). docs/deploy.md explains the layout.

# The web console's map library, from npm (package.json, as `make demo` installs it).
FROM node:22-slim AS console
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund

# Wheels of every dependency, so the runtime stage needs no compiler and carries no build tools.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY protocol protocol
COPY gateway gateway
COPY processing processing
COPY tracking tracking
COPY commands commands
COPY storage storage
COPY api api
COPY simulator simulator
COPY throttle throttle
COPY retention retention
COPY runtime runtime
COPY gp8 gp8
RUN pip wheel --no-cache-dir --wheel-dir /wheels . && rm /wheels/gp8-*.whl

FROM python:3.11-slim
# gp8 runs as an unprivileged user with a fixed uid, so volume ownership is predictable.
ARG GP8_UID=10001
# The uid the eclipse-mosquitto image runs its broker as: `gp8 admin mqtt-acl` runs with it
# (docker-compose.yml, service mqtt-acl) so the broker can read the 0600 password file it
# writes, also after a SIGHUP reload; the directory is the volume both containers share.
ARG MOSQUITTO_UID=1883
RUN useradd --system --uid "$GP8_UID" --user-group --home-dir /var/lib/gp8 --create-home gp8 \
    && install -d -o "$MOSQUITTO_UID" -g "$MOSQUITTO_UID" -m 0750 /mosquitto/gp8
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index /wheels/*.whl && rm -rf /wheels
# gp8 itself runs from the source layout (an editable install of /opt/gp8): the API serves
# the console from console/ and node_modules/ beside the packages (api/routes/console.py).
WORKDIR /opt/gp8
COPY --from=build /src ./
COPY console console
COPY --from=console /src/node_modules node_modules
RUN pip install --no-cache-dir --no-deps -e . && rm -rf build
USER gp8
WORKDIR /var/lib/gp8
ENV PYTHONUNBUFFERED=1 \
    GP8_DATA_DIR=/var/lib/gp8/data \
    GP8_LOG_FORMAT=json
# Boxes (GP8 TCP), REST API. Teltonika (GP8_TELTONIKA__PORT) is off unless set.
EXPOSE 5027 8000
# GET /health on this container's API (HTTP or HTTPS, as the settings say).
HEALTHCHECK --interval=15s --timeout=6s --start-period=30s --retries=3 \
    CMD ["python", "-m", "gp8.healthcheck"]
ENTRYPOINT ["gp8"]
CMD ["serve"]
