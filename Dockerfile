# Multi-stage build of the herald binary (rustls everywhere: no OpenSSL).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin herald

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home /var/lib/herald --create-home herald
COPY --from=build /src/target/release/herald /usr/local/bin/herald
USER herald
WORKDIR /var/lib/herald
ENV HERALD_BIND=0.0.0.0:8000 \
    HERALD_DATA_DIR=/var/lib/herald
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=5 CMD curl -fsS http://127.0.0.1:8000/readyz || exit 1
ENTRYPOINT ["herald"]
CMD ["serve"]
