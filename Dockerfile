# sdrt container image: `sdrt serve` (the WebUI API on port 7860) as a non-root user.
#
#   docker build -t sdrt:cuda .                              # CUDA backend (NVIDIA CUDA 13 + cuDNN 9 images)
#   docker build --build-arg VARIANT=cpu -t sdrt:cpu .       # CPU only (Ubuntu 24.04)
#   docker run --gpus all -p 7860:7860 -v /srv/models:/models:ro -v sdrt-cache:/cache sdrt:cuda \
#       serve --host 0.0.0.0 -m /models/sd15
#
# The build stage runs deploy/docker/build.sh, which installs sdrt with the shared libraries it needs into
# /opt/sdrt; the run stage copies that folder onto the matching runtime image. Both variants use Ubuntu
# 24.04 package names. Kubernetes: deploy/helm/sdrt and docs/DEPLOY.md.
ARG VARIANT=cuda
ARG CUDA_VERSION=13.0.1

FROM nvidia/cuda:${CUDA_VERSION}-cudnn-devel-ubuntu24.04 AS build-cuda
FROM ubuntu:24.04 AS build-cpu

# hadolint ignore=DL3006
FROM build-${VARIANT} AS build
ARG VARIANT
ARG SDRT_GIT_REVISION=unknown
# GPU architectures compiled for (CMake list); 90 = H100/H200. Others (86 A10, 89 L4) are untested.
ARG SDRT_CUDA_ARCHITECTURES=90
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      g++ cmake ninja-build pkg-config binutils libopenblas-dev nlohmann-json3-dev libcli11-dev libpng-dev \
      libcurl4-openssl-dev libcpp-httplib-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN SDRT_GIT_REVISION="${SDRT_GIT_REVISION}" SDRT_CUDA_ARCHITECTURES="${SDRT_CUDA_ARCHITECTURES}" deploy/docker/build.sh /opt/sdrt "$([ "${VARIANT}" = cuda ] && echo ON || echo OFF)"

FROM nvidia/cuda:${CUDA_VERSION}-cudnn-runtime-ubuntu24.04 AS run-cuda
FROM ubuntu:24.04 AS run-cpu

# hadolint ignore=DL3006
FROM run-${VARIANT}
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 sdrt \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /cache --shell /usr/sbin/nologin sdrt \
 && mkdir -p /models /cache \
 && chown 10001:10001 /cache
COPY --from=build /opt/sdrt /opt/sdrt
# The model cache and engine plans live under SDRT_HOME (mount a volume there); nothing else is written.
ENV PATH=/opt/sdrt/bin:${PATH} \
    SDRT_HOME=/cache
USER 10001:10001
WORKDIR /cache
EXPOSE 7860
STOPSIGNAL SIGTERM
ENTRYPOINT ["sdrt"]
CMD ["serve", "--host", "0.0.0.0", "--port", "7860", "-m", "/models/model"]
