#!/bin/sh
# Installs Apus as systemd services on a VM: the binary, the users, /etc/apus, the units.
#
#   sudo ./install.sh [--root DIR] [--roles cas,scheduler,worker] [--workers N] [--no-enable] [APUS_BINARY]
#
# APUS_BINARY defaults to ../../.build/release/apus (built with `swift build -c release` if
# missing). --root DIR (or DESTDIR=DIR) installs into DIR as if it were /, without calling
# systemctl or systemd-sysusers: for packaging and for the tests. Existing files under
# /etc/apus are never overwritten; the new version is written beside them as FILE.new.
# Safe to run again (upgrades: a new binary and units, configs kept).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=${DESTDIR:-}
roles=cas,scheduler,worker
workers=1
enable=yes
binary=

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit "$1"; }

while [ $# -gt 0 ]; do
    case $1 in
        --root) root=$2; shift 2 ;;
        --root=*) root=${1#--root=}; shift ;;
        --roles) roles=$2; shift 2 ;;
        --roles=*) roles=${1#--roles=}; shift ;;
        --workers) workers=$2; shift 2 ;;
        --workers=*) workers=${1#--workers=}; shift ;;
        --no-enable) enable=no; shift ;;
        -h|--help) usage 0 ;;
        -*) echo "install.sh: unknown option $1" >&2; usage 2 >&2 ;;
        *) binary=$1; shift ;;
    esac
done
root=${root%/}

if [ -z "$binary" ]; then
    repo=$(cd "$here/../.." && pwd)
    binary=$repo/.build/release/apus
    if [ ! -x "$binary" ]; then
        echo "install.sh: building apus (swift build -c release --static-swift-stdlib)"
        (cd "$repo" && swift build -c release --static-swift-stdlib)
    fi
fi
[ -x "$binary" ] || { echo "install.sh: $binary is not an executable" >&2; exit 1; }

has_role() { case ",$roles," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

# install_new SRC DEST MODE: copies unless DEST exists (then SRC goes to DEST.new if different).
install_new() {
    if [ -e "$2" ]; then
        if ! cmp -s "$1" "$2"; then
            install -m "$3" "$1" "$2.new"
            echo "kept $2 (edited); the shipped version is $2.new"
        fi
    else
        install -m "$3" "$1" "$2"
        echo "installed $2"
    fi
}

# 1. The binary (replaced on every run: that is the upgrade).
install -d "$root/usr/local/bin"
install -m 0755 "$binary" "$root/usr/local/bin/apus.new"
mv -f "$root/usr/local/bin/apus.new" "$root/usr/local/bin/apus"
echo "installed $root/usr/local/bin/apus"

# 2. Users (sysusers.d) and directories (tmpfiles.d).
install -d "$root/usr/lib/sysusers.d" "$root/usr/lib/tmpfiles.d"
install -m 0644 "$here/sysusers.d/apus.conf" "$root/usr/lib/sysusers.d/apus.conf"
install -m 0644 "$here/tmpfiles.d/apus.conf" "$root/usr/lib/tmpfiles.d/apus.conf"
if [ -z "$root" ]; then
    if command -v systemd-sysusers >/dev/null 2>&1; then
        systemd-sysusers /usr/lib/sysusers.d/apus.conf
    else
        getent group apus >/dev/null || groupadd --system apus
        getent passwd apus >/dev/null || useradd --system --gid apus --home-dir /var/lib/apus --shell /usr/sbin/nologin apus
        getent group apus-action >/dev/null || groupadd --system apus-action
        getent passwd apus-action >/dev/null || useradd --system --gid apus-action --home-dir /nonexistent --shell /usr/sbin/nologin apus-action
    fi
    if command -v systemd-tmpfiles >/dev/null 2>&1; then
        systemd-tmpfiles --create /usr/lib/tmpfiles.d/apus.conf
    fi
fi
install -d -m 0750 "$root/etc/apus" "$root/etc/apus/tls"
install -d -m 0755 "$root/var/lib/apus"
if [ -z "$root" ]; then
    chgrp apus /etc/apus /etc/apus/tls
fi

# 3. Configs and the environment file: never overwritten.
install_new "$here/config/apus.env" "$root/etc/apus/apus.env" 0640
for role in cas scheduler worker; do
    if has_role "$role"; then
        install_new "$here/config/$role.json" "$root/etc/apus/$role.json" 0640
    fi
done
if [ ! -e "$root/etc/apus/tokens" ]; then
    install -m 0640 /dev/null "$root/etc/apus/tokens"
    echo "installed $root/etc/apus/tokens (empty: add lines from \`apus token --principal NAME\`)"
fi
if [ -z "$root" ]; then
    chgrp apus /etc/apus/apus.env /etc/apus/tokens /etc/apus/*.json
fi

# 4. Units (replaced: local changes belong in drop-ins, `systemctl edit apus-cas`).
install -d "$root/etc/systemd/system"
units=
for role in cas scheduler; do
    if has_role "$role"; then
        install -m 0644 "$here/units/apus-$role.service" "$root/etc/systemd/system/apus-$role.service"
        units="$units apus-$role.service"
    fi
done
if has_role worker; then
    install -m 0644 "$here/units/apus-worker@.service" "$root/etc/systemd/system/apus-worker@.service"
    i=1
    while [ "$i" -le "$workers" ]; do
        units="$units apus-worker@$i.service"
        i=$((i + 1))
    done
fi
echo "installed units:$units"

if [ -z "$root" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    if [ "$enable" = yes ]; then
        # shellcheck disable=SC2086 # $units is a list of unit names without spaces
        systemctl enable $units
        echo "enabled; start with: systemctl start$units (after the certificates are in /etc/apus/tls)"
    fi
else
    echo "not running systemctl (--root given or systemd is not PID 1)"
fi
