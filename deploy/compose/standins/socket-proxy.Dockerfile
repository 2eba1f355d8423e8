# Stand-in for wollomatic/socket-proxy in `make test-deploy`: the static
# binary of socket-proxy/ (built first by scripts/images.sh), FROM scratch
# like the original.
FROM scratch
COPY socket-proxy/socket-proxy /socket-proxy
EXPOSE 2375
ENTRYPOINT ["/socket-proxy"]
