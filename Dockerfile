# Multi-stage build of the `bulwark` binary (controller and agent share the image).
# Dependencies are cooked in their own layer (cargo-chef) so code changes rebuild only our crates.
FROM rust:1.95-bookworm AS chef
RUN cargo install cargo-chef --locked
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --recipe-path recipe.json -p operator
COPY . .
RUN cargo build --release --locked -p operator --bin bulwark

# The agent needs fusermount3, qemu-img and mkfs tools, and both need libssl3 (block hashing); the controller runs as non-root from the
# same image (the Deployment sets runAsNonRoot), the agent with the privileges its DaemonSet grants.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends fuse3 qemu-utils e2fsprogs xfsprogs util-linux ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=builder /src/target/release/bulwark /usr/local/bin/bulwark
# glibc keeps per-thread arenas of freed 2 MiB block buffers; two arenas bound the resident
# memory of backups and restores (the manifests set the same).
ENV MALLOC_ARENA_MAX=2
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/bulwark"]
