# The Node.js doze ships in its release (scripts/dist.sh) and installs on a machine whose Debian
# has none new enough (scripts/setup.sh): the official binary, as the npm registry's
# node-linux-<arch> package carries it, and the npm that goes with Node 22. Checksums of the
# registry tarballs (sha256), checked before anything is unpacked.
NODE_VERSION=22.23.5
NODE_SHA256_x64=2e77fcc6b99a29e82643e27ae8970b168c99e5d74718705c085f8136e605c858
NPM_VERSION=10.9.9
NPM_SHA256=c80bd097147cce32e31010b791bab8c71a26a5e10668210ec9d2e7f4c7cea2a1
NPM_REGISTRY=${npm_config_registry:-https://registry.npmjs.org}
NPM_REGISTRY=${NPM_REGISTRY%/}
