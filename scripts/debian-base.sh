# Sourced by scripts/image-check.sh and scripts/fresh-check.sh: the Debian bookworm base image
# both start from, bootstrapped locally (debootstrap --variant=minbase, slimmed like
# debian:bookworm-slim, with this machine's apt sources) since no registry is reachable here.
# Kept in podman's storage as $base for the next run.
# Needs: say, die, elapsed; $work (a temp dir); $refresh (1 = bootstrap again).
base=localhost/docket-base/debian:bookworm-slim

# podman as this kind of machine needs it: crun rejects its cgroup layout (runc works), and the
# default ulimits are low. Written to $work/containers.conf and exported.
podman_config() {
cat >"$work/containers.conf" <<'EOF'
[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]

[engine]
runtime = "runc"
EOF
export CONTAINERS_CONF=$work/containers.conf
}

ensure_debian_base() {
t=$(date +%s)
if [ $refresh = 1 ] || ! podman image exists "$base"; then
  # the Debian mirror this machine already uses (deb822 or one-line format); debootstrap's
  # default otherwise
  mirror=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\/debian\)\/*$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)
  [ -n "$mirror" ] || mirror=$(sed -n 's/^deb[[:space:]]\+\(http[^[:space:]]*\/debian\)\/*[[:space:]]\+bookworm[[:space:]].*/\1/p' /etc/apt/sources.list 2>/dev/null | head -n1)
  say "bootstrapping Debian bookworm (minbase)${mirror:+ from the configured mirror}"
  rootfs=$work/rootfs
  debootstrap --variant=minbase bookworm "$rootfs" ${mirror:+"$mirror"} >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
  # apt sources as in the official image (bookworm, -updates, -security), from this machine's
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    cp /etc/apt/sources.list.d/debian.sources "$rootfs/etc/apt/sources.list.d/debian.sources"
    rm -f "$rootfs/etc/apt/sources.list"
  fi
  # "slim": no documentation, manuals or locales from later installs; no apt caches
  cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
EOF
  cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
  rm -rf "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/var/cache/apt/archives/*.deb \
    "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log
  tar -C "$rootfs" -c . | podman import --change 'CMD ["bash"]' - "$base" >"$work/import.log" 2>&1 \
    || { cat "$work/import.log" >&2; die "podman import of the base failed"; }
  rm -rf "$rootfs"
  say "base $base bootstrapped in $(elapsed "$t") s"
else
  say "base $base reused (--refresh-base bootstraps it again)"
fi

}
