# Stand-in for prom/alertmanager in `make test-deploy`: Debian's
# Alertmanager as /bin/alertmanager, with /bin/sh, /alertmanager owned by
# nobody, as in the official image.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d \
    && apt-get update && apt-get install -y --no-install-recommends prometheus-alertmanager \
    && rm -rf /var/lib/apt/lists/* /usr/sbin/policy-rc.d \
    && ln -s prometheus-alertmanager /usr/bin/alertmanager \
    && mkdir -p /alertmanager /etc/alertmanager && chown nobody:nogroup /alertmanager
USER nobody
WORKDIR /alertmanager
EXPOSE 9093
ENTRYPOINT ["/bin/alertmanager"]
CMD ["--config.file=/etc/alertmanager/alertmanager.yml", "--storage.path=/alertmanager"]
