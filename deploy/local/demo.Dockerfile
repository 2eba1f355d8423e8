# The demo container `make run` heals: testctr (internal/dockertest), a
# static binary serving HTTP on :8080, with a health check.
FROM scratch
COPY testctr /testctr
EXPOSE 8080
HEALTHCHECK --interval=2s --timeout=1s --retries=2 CMD ["/testctr", "health"]
ENTRYPOINT ["/testctr", "-http", ":8080"]
