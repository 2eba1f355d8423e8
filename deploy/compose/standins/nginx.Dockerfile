# Stand-in for nginx:alpine in `make test-deploy`'s run of
# deploy/examples/gateway-proxy: Debian's nginx, and wget for the
# example's health check.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d \
    && apt-get update && apt-get install -y --no-install-recommends nginx wget \
    && rm -rf /var/lib/apt/lists/* /usr/sbin/policy-rc.d
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
