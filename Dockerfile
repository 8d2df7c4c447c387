# The doze agent as an OCI image: `make image` (scripts/image.sh) builds it from the release tarball
# (make dist) and a base of the system tools the agent shells out to, copied with their libraries
# from the build host by scripts/image.sh: no registry, no package manager, no shell needed.
#
#   docker run --privileged --network host --pid host \
#     -v /sys/fs/bpf:/sys/fs/bpf -v /sys/fs/cgroup:/sys/fs/cgroup -v /var/run/netns:/var/run/netns \
#     -v /run/doze:/run/doze -v /etc/doze:/etc/doze:ro doze:<version> agent --config /etc/doze/doze.json
FROM scratch

# ip, tc (iproute2), iptables-nft with its extensions, nsenter and setpriv (util-linux), getent, and the
# shared libraries they and Node.js load (libc, libstdc++, libbpf for tc, libnftnl, ...).
COPY base/ /

# The release, unpacked: node, lib/ (compiled JS, BPF object, static helpers, node_modules), doze.
ARG DOZE_TARBALL
ADD ${DOZE_TARBALL} /opt/doze/

ENV PATH=/opt/doze:/usr/sbin:/usr/bin:/sbin:/bin
ENTRYPOINT ["/opt/doze/node", "/opt/doze/lib/dist/cli.js"]
CMD ["agent", "--help"]
