# selfheal, built with cgo (go-nvml loads libnvidia-ml at run time; the
# NVIDIA container runtime mounts it into the container when a GPU is
# requested). Build from the repository root: docker build -t selfheal .
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ENV CGO_ENABLED=1 CGO_CFLAGS="-O2 -g -Wno-deprecated-declarations"
RUN go build -trimpath -ldflags="-s -w" -o /out/selfheal ./cmd/selfheal

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/selfheal /usr/local/bin/selfheal
COPY deploy/selfheal.yml /etc/selfheal/selfheal.yml
EXPOSE 9595
ENTRYPOINT ["/usr/local/bin/selfheal"]
CMD ["serve", "--config.file=/etc/selfheal/selfheal.yml"]
