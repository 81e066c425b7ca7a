#!/bin/sh
# First boot of an Apus VM on Azure (run by cloud-init as /usr/local/sbin/apus-bootstrap;
# safe to run again). Settings come from /etc/apus/bootstrap.env (written by Terraform):
#   1. the CAS data disk (server only): format once, mount at /var/lib/apus
#   2. the apus executable (checked against its SHA-256) and deployment-examples/systemd
#      from the repository archive, installed with its install.sh for APUS_ROLES
#   3. certificates and tokens from Key Vault with the VM's managed identity
#   4. start the units
set -eu

env_file=${APUS_BOOTSTRAP_ENV:-/etc/apus/bootstrap.env}
# shellcheck source=/dev/null
. "$env_file"

imds=http://169.254.169.254/metadata
log() { echo "apus-bootstrap: $*"; }

# 1. The data disk (the CAS and action cache; filesystem stores).
if [ -n "${DATA_DISK_LUN:-}" ]; then
    disk=
    tries=0
    # The disk is attached after the VM is created: wait for it.
    while [ -z "$disk" ]; do
        for d in "/dev/disk/azure/data/by-lun/$DATA_DISK_LUN" "/dev/disk/azure/scsi1/lun$DATA_DISK_LUN"; do
            if [ -e "$d" ]; then disk=$d; fi
        done
        if [ -z "$disk" ]; then
            tries=$((tries + 1))
            [ "$tries" -le 120 ] || { log "data disk at LUN $DATA_DISK_LUN never appeared"; exit 1; }
            sleep 5
        fi
    done
    if ! blkid "$disk" >/dev/null 2>&1; then
        log "formatting $disk"
        mkfs.ext4 -q -L apus-data "$disk"
    fi
    mkdir -p /var/lib/apus
    if ! grep -q 'LABEL=apus-data' /etc/fstab; then
        echo 'LABEL=apus-data /var/lib/apus ext4 defaults,nofail,noatime 0 2' >> /etc/fstab
    fi
    mountpoint -q /var/lib/apus || mount /var/lib/apus
fi

# The server reaches its own CAS by the certificate's name without hairpinning through the
# internal load balancer (which does not route a backend's calls back to itself).
if [ -n "${CAS_HOST_LOCAL:-}" ] && ! grep -q " $CAS_HOST_LOCAL\$" /etc/hosts; then
    echo "127.0.0.1 $CAS_HOST_LOCAL" >> /etc/hosts
fi

# 2. apus and the systemd layout.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
curl -fsSL --retry 5 -o "$work/apus" "$APUS_BINARY_URL"
echo "$APUS_BINARY_SHA256  $work/apus" | sha256sum -c - >/dev/null || { log "apus checksum mismatch"; exit 1; }
chmod 0755 "$work/apus"
curl -fsSL --retry 5 -o "$work/src.tar.gz" "$APUS_SOURCE_URL"
mkdir "$work/src"
tar -xzf "$work/src.tar.gz" -C "$work/src" --strip-components=1
"$work/src/deployment-examples/systemd/install.sh" --roles "$APUS_ROLES" --workers "${APUS_WORKERS:-1}" "$work/apus"

# 3. Secrets: a token for Key Vault from the managed identity, then each secret. The role
# assignments are made after the VM exists, so 403s are retried for a while.
token() {
    curl -fsS -H Metadata:true \
        "$imds/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'
}
target() {
    case $1 in
        tokens) echo /etc/apus/tokens ;;
        ops-token) echo /etc/apus/ops-token ;;
        *-pem) echo "/etc/apus/tls/${1%-pem}.pem" ;;
        *-key) echo "/etc/apus/tls/${1%-key}.key" ;;
        *) echo "/etc/apus/$1" ;;
    esac
}
install -d -m 0750 -o root -g apus /etc/apus/tls
for name in $KEY_VAULT_SECRETS; do
    dest=$(target "$name")
    tries=0
    # 403 until the role assignments exist; a placeholder until the operator uploads it.
    until curl -fsS -H "Authorization: Bearer $(token)" \
            "https://$KEY_VAULT.vault.azure.net/secrets/$name?api-version=7.4" -o "$work/secret.json" &&
          python3 -c 'import json,sys; sys.stdout.write(json.load(open(sys.argv[1]))["value"])' \
            "$work/secret.json" > "$work/value" &&
          ! grep -q '^placeholder:' "$work/value"; do
        tries=$((tries + 1))
        [ "$tries" -le 240 ] || { log "secret $name not readable in $KEY_VAULT after an hour: upload it (README), then reimage"; exit 1; }
        sleep 15
    done
    install -m 0640 -o root -g apus "$work/value" "$dest.new"
    mv -f "$dest.new" "$dest"
done

# 4. Start (or restart, to load new secrets) the units install.sh enabled.
units=
case ",$APUS_ROLES," in *,cas,*) units="$units apus-cas.service" ;; esac
case ",$APUS_ROLES," in *,scheduler,*) units="$units apus-scheduler.service" ;; esac
case ",$APUS_ROLES," in
    *,worker,*)
        i=1
        while [ "$i" -le "${APUS_WORKERS:-1}" ]; do units="$units apus-worker@$i.service"; i=$((i + 1)); done ;;
esac
# shellcheck disable=SC2086
systemctl restart $units
log "started$units"
