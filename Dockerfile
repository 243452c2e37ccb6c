# readreceiptd container image (the README's "With Docker").
#
#   docker build -t readreceiptd .
#   docker run -d --name readreceiptd \
#     -v /srv/readreceiptd/etc:/etc/readreceiptd:ro \
#     -v readreceiptd-state:/var/lib/readreceiptd \
#     -p 127.0.0.1:9464:9464 -p 127.0.0.1:9465:9465 readreceiptd
#
# The mounted directory holds config.yaml (state.path
# /var/lib/readreceiptd/state.db; metrics.listen and api.listen on 0.0.0.0,
# api.token_file set) and the secret files it names, readable by uid 10001.
# tests/deploy/check_dockerfile.sh checks this file against scripts/setup.sh
# and the binary's libraries.

# Build: the same set-up script as the README and CI, so the image is built
# with the same packages and steps that the tests ran with. The tests are
# not built here.
FROM debian:bookworm-slim AS build
WORKDIR /src
COPY . .
RUN RRD_CMAKE_ARGS="-DRRD_TESTS=OFF" scripts/setup.sh \
 && DESTDIR=/staging cmake --install build --prefix /usr --strip

# Runtime: the shared libraries of the packages setup.sh builds against (the
# runtime side of each -dev package), CA certificates, and the binary.
FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates \
      libcurl4 \
      libyaml-cpp0.7 \
      libspdlog1.10 \
      libfmt9 \
      libprometheus-cpp-core1.0 \
      libprometheus-cpp-pull1.0 \
      libsqlite3-0 \
      libsystemd0 \
      libcpp-httplib0.11 \
      libssl3 \
      libwslay1 \
      libpq5 \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 readreceiptd \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /var/lib/readreceiptd --shell /usr/sbin/nologin readreceiptd \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/readreceiptd
COPY --from=build /staging/usr/bin/readreceiptd /usr/bin/readreceiptd
COPY --from=build /staging/etc/readreceiptd/config.yaml.example /etc/readreceiptd/config.yaml.example
COPY --from=build /staging/usr/share/doc/readreceiptd/ /usr/share/doc/readreceiptd/

USER 10001:10001
VOLUME /var/lib/readreceiptd
# metrics.listen, api.listen
EXPOSE 9464 9465
STOPSIGNAL SIGTERM
# GET /healthz on api.listen: the API must be enabled in config.yaml.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["/usr/bin/readreceiptd", "--healthcheck", "--config", "/etc/readreceiptd/config.yaml"]
ENTRYPOINT ["/usr/bin/readreceiptd"]
CMD ["--config", "/etc/readreceiptd/config.yaml", "--log-format", "json"]
