# syntax=docker/dockerfile:1
#
# Bus MCP Server image: `docker compose up -d` (see compose.yaml) or
#   docker build -t bus-mcp-server . && docker run -p 8088:8088 -v bus-data:/data bus-mcp-server
# The admin listener (ADMIN_PORT, 8089) stays on the container's loopback; administer with
#   docker exec <container> bus-mcp principal add NAME
#
# No build step: Node 24 runs the TypeScript in src/ as it is (type stripping). Stages: the
# production dependencies alone, and the slim runtime holding only those, the launchers in bin/,
# src/ and the migrations in drizzle/. Type stripping refuses files under node_modules, so the
# application lives in /app/src, never in a node_modules folder.

ARG NODE_IMAGE=docker.io/library/node:24-bookworm-slim

# ---- production dependencies only -------------------------------------------------------------
FROM ${NODE_IMAGE} AS prod-deps
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: no production dependency needs its install script; npm's cache stays in this
# stage, out of the runtime image.
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund

# ---- runtime ----------------------------------------------------------------------------------
FROM ${NODE_IMAGE} AS runtime
# tini runs as PID 1: it forwards SIGTERM/SIGINT to Node (which then shuts down gracefully,
# finishing in-flight requests) and reaps zombies. It works with plain `docker run` too, unlike
# compose's `init: true`. `bus-mcp` on PATH for `docker compose exec bus bus-mcp …`. /data holds
# the embedded database (used only when DATABASE_URL is unset), owned by the unprivileged `node`
# user (uid 1000) of the official Node image.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/* \
 && printf '#!/bin/sh\nexec node /app/bin/bus-mcp.js "$@"\n' >/usr/local/bin/bus-mcp \
 && chmod 0755 /usr/local/bin/bus-mcp \
 && mkdir -p /data \
 && chown node:node /data

ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=8088 \
    DATA_DIR=/data
WORKDIR /app
USER node
VOLUME ["/data"]
EXPOSE 8088

# No curl in the slim image: Node's fetch does the check. HOST=0.0.0.0 includes 127.0.0.1.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||8088)+'/healthz',{signal:AbortSignal.timeout(4000)}).then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]

ENTRYPOINT ["/usr/bin/tini", "--"]
# bin/server.js checks the Node version, then imports src/server.ts.
CMD ["node", "bin/server.js"]

# The application last, the part that changes most last, so a code change rebuilds one layer.
# Files stay owned by root: the server cannot rewrite its own code. package.json comes along for
# "type": "module" (src/ and bin/ are ES modules).
COPY --from=prod-deps /app/node_modules ./node_modules
COPY package.json ./
COPY drizzle ./drizzle
COPY bin ./bin
COPY src ./src
