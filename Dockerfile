# syntax=docker/dockerfile:1
#
# Switchyard's image: both executables, `dispatcher` and `worker`, on PATH in a slim Debian runtime.
#
#   docker build -t switchyard .
#   docker run --rm -e DATABASE_URL=postgres://… switchyard dispatcher migrate
#   docker run -d   -e DATABASE_URL=postgres://… switchyard worker --concurrency 32
#
# The build stage and the runtime stage must share a Debian release (bookworm here): the binaries
# link glibc, libpq and libcurl dynamically, and the Swift runtime statically.
# compose.yaml builds this file; docs/deploy.md explains the deployment around it.

ARG SWIFT_VERSION=6.3
ARG DEBIAN_RELEASE=bookworm

# ---- build ------------------------------------------------------------------------------------
FROM swift:${SWIFT_VERSION}-${DEBIAN_RELEASE} AS build

# libpq's headers for the CLibPQ system library target (found through pkg-config), and libcurl's,
# which a statically linked FoundationNetworking needs at link time. Versions are not pinned: the
# release's archive keeps one version of each, and its security updates are what we want.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libpq-dev libcurl4-openssl-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /build

# Only what the package needs; Tests/ comes along because Package.swift declares test targets and
# SwiftPM refuses a manifest whose target directories are missing (nothing in it is compiled).
COPY Package.swift ./
COPY Plugins/ Plugins/
COPY Sources/ Sources/
COPY Tests/ Tests/
COPY sql/ sql/

# --static-swift-stdlib links the Swift runtime and Foundation into each binary, so the runtime
# image needs no Swift toolchain, only the C libraries the binaries name (`scripts/check-deploy
# --build` checks them). Symbols stay in, for the backtracer copied alongside.
RUN swift build -c release --static-swift-stdlib --product dispatcher \
    && swift build -c release --static-swift-stdlib --product worker \
    && mkdir -p /staging/bin \
    && cp "$(swift build -c release --static-swift-stdlib --show-bin-path)/dispatcher" /staging/bin/ \
    && cp "$(swift build -c release --static-swift-stdlib --show-bin-path)/worker" /staging/bin/ \
    && cp /usr/libexec/swift/linux/swift-backtrace-static /staging/bin/

# ---- runtime ----------------------------------------------------------------------------------
FROM debian:${DEBIAN_RELEASE}-slim AS runtime

# libpq5: the Postgres client library. libcurl4: FoundationNetworking's HTTP (provider calls).
# ca-certificates: TLS to providers and to managed Postgres (sslmode=verify-full). tzdata: price
# windows are given in named time zones. libstdc++6: the Swift runtime's C++ parts. Not pinned,
# as above: a Debian release takes security updates only.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libpq5 libcurl4 libstdc++6 ca-certificates tzdata \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --user-group --uid 10001 --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin switchyard

COPY --from=build /staging/bin/ /usr/local/bin/
# The example catalog (simulated models, no API keys), for a trial without a checkout:
# `docker run IMAGE dispatcher models import /usr/share/switchyard/catalog.json` (compose.yaml
# mounts the checkout's, or the operator's, instead).
COPY examples/catalog.json /usr/share/switchyard/catalog.json

# A crash prints a symbolicated backtrace of every thread to stderr instead of dying silently.
ENV SWIFT_BACKTRACE=enable=yes,sanitize=yes,threads=all,images=all,interactive=no,swift-backtrace=/usr/local/bin/swift-backtrace-static

# Numeric, so a runtime that enforces non-root (Kubernetes runAsNonRoot) can verify it.
USER 10001:10001
WORKDIR /tmp

# No ENTRYPOINT: the command names the executable, so one image serves both
# (`dispatcher migrate`, `dispatcher status`, `worker --concurrency 32`). The worker handles
# SIGTERM itself (graceful drain within --shutdown-grace), so it can run as PID 1.
CMD ["worker"]
