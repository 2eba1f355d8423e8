# selfheal's image. Build from the repository root:
#
#   docker build -t selfheal .
#
# The base images are build arguments, for a site's own mirror or images
# built locally where no registry is reachable:
#
#   docker build --build-arg GO_IMAGE=my/golang:1.26 --build-arg BASE_IMAGE=my/debian:bookworm -t selfheal .
#
# By default selfheal is built with cgo (go-nvml loads libnvidia-ml at run
# time; the NVIDIA container runtime mounts it into the container when a
# GPU is requested). --build-arg CGO_ENABLED=0 builds a static selfheal for
# hosts without GPUs: the gpu collector reports none, GPU actions refuse.
ARG GO_IMAGE=golang:1.26-bookworm
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${GO_IMAGE} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG CGO_ENABLED=1
ENV CGO_ENABLED=${CGO_ENABLED} CGO_CFLAGS="-O2 -g -Wno-deprecated-declarations"
# The version from VERSION (the context has no .git for a revision).
RUN go build -trimpath -ldflags="-s -w -X github.com/prometheus/common/version.Version=$(cat VERSION)" -o /out/selfheal ./cmd/selfheal

FROM ${BASE_IMAGE}
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin selfheal
COPY --from=build /out/selfheal /usr/local/bin/selfheal
COPY deploy/selfheal.yml /etc/selfheal/selfheal.yml
# selfheal reaches Docker over TCP (the compose file's socket proxy) and
# needs no root for it. The GPU-changing actions (gpu_throttle, gpu_reset)
# and log cleanup of root-owned files do: run the container as root
# (`user: root`) where they are configured.
USER 10001
EXPOSE 9595
ENTRYPOINT ["/usr/local/bin/selfheal"]
CMD ["serve", "--config.file=/etc/selfheal/selfheal.yml"]
