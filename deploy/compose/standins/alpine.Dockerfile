# Stand-in for alpine in `make test-deploy`'s run of
# deploy/examples/gateway-proxy: the gateway only holds a network
# namespace with `sleep infinity`, which the Debian base has.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
CMD ["sh"]
