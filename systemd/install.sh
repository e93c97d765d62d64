#!/usr/bin/env bash
# Install, update or remove the lightbox kiosk on Raspberry Pi OS Bookworm 64-bit.
#
#   sudo systemd/install.sh                 install or update, enable and (re)start
#   sudo systemd/install.sh --display       also the touchscreen display (cage + chromium)
#   sudo systemd/install.sh --uninstall     remove app, venv and units; keep config and data
#   sudo systemd/install.sh --uninstall --purge   also delete config, data, logs and users
#   systemd/install.sh --dry-run ...        print what would be done, change nothing
#   systemd/install.sh --root DIR ...       install the files under DIR (image builds, tests)
#
# Safe to run again: it is how the kiosk is updated. /etc/kiosk/kiosk.toml is created once
# from kiosk.toml.example and never overwritten.
#
# With --root DIR, files go under DIR, the user is added to DIR/etc/passwd (useradd
# --prefix), units are enabled with `systemctl --root=DIR` and nothing is started.
# apt-get still runs on this machine unless --no-apt is given.
#
# Every external command is a variable so tests can substitute recorders, e.g.
#   APT_GET=/path/to/recorder SYSTEMCTL=... systemd/install.sh --root /tmp/scratch

set -euo pipefail

APT_GET=${APT_GET:-apt-get}
SYSTEMCTL=${SYSTEMCTL:-systemctl}
USERADD=${USERADD:-useradd}
USERMOD=${USERMOD:-usermod}
USERDEL=${USERDEL:-userdel}
GETENT=${GETENT:-getent}
CHOWN=${CHOWN:-chown}
PYTHON=${PYTHON:-python3}

KIOSK_USER=kiosk
DISPLAY_USER=kiosk-display
CAMERA_GROUPS=video,render
DISPLAY_GROUPS=video,render,input
BASE_PACKAGES=(python3-picamera2 python3-venv python3-pip sqlite3)
DISPLAY_PACKAGES=(cage chromium)
CORE_UNITS=(kiosk.service kiosk-sync.service kiosk-sync.timer kiosk-retention.service
    kiosk-retention.timer)
ENABLE_UNITS=(kiosk.service kiosk-sync.timer kiosk-retention.timer)
DISPLAY_UNIT=kiosk-display.service
# Fails the install when pip put numpy >= 2 into the venv (see constraints/pi.txt).
NUMPY_CHECK='import numpy, sys
if int(numpy.__version__.split(".")[0]) >= 2:
    sys.exit("numpy " + numpy.__version__ + " at " + numpy.__file__ + " shadows apt numpy 1.x; "
             "picamera2 would fail with numpy.dtype size changed (see constraints/pi.txt)")'

SOURCE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROOT=/
MODE=install
WITH_DISPLAY=0
PURGE=0
DRY_RUN=0
NO_APT=0

usage() {
    sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

die() {
    echo "install.sh: error: $*" >&2
    exit 1
}

log() {
    echo "install.sh: $*"
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --display) WITH_DISPLAY=1 ;;
        --uninstall) MODE=uninstall ;;
        --purge) PURGE=1 ;;
        --dry-run) DRY_RUN=1 ;;
        --no-apt) NO_APT=1 ;;
        --root)
            [[ $# -ge 2 ]] || die "--root needs a directory"
            ROOT=$2
            shift
            ;;
        --root=*) ROOT=${1#--root=} ;;
        --source)
            [[ $# -ge 2 ]] || die "--source needs a directory"
            SOURCE_DIR=$2
            shift
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
    shift
done

[[ $PURGE -eq 0 || $MODE == uninstall ]] || die "--purge only makes sense with --uninstall"
if [[ $ROOT != / ]]; then
    [[ -d $ROOT ]] || die "--root $ROOT is not a directory; create it first"
    ROOT=$(cd "$ROOT" && pwd)
fi
if [[ $DRY_RUN -eq 0 && $ROOT == / && $(id -u) -ne 0 ]]; then
    die "run as root (sudo), or use --dry-run or --root DIR"
fi

# Paths on the target system, and the same paths as seen from here (under --root).
APP_DIR=/opt/kiosk/app
VENV_DIR=/opt/kiosk/venv
CONFIG_DIR=/etc/kiosk
CONFIG_FILE=$CONFIG_DIR/kiosk.toml
UNIT_DIR=/etc/systemd/system
DATA_DIR=/var/lib/kiosk
LOG_DIR=/var/log/kiosk
WRAPPER=/usr/local/bin/kiosk

at() {
    # Path $1 inside the target root.
    if [[ $ROOT == / ]]; then echo "$1"; else echo "$ROOT$1"; fi
}

PIP=${PIP:-$(at $VENV_DIR)/bin/pip}
VENV_PYTHON=${VENV_PYTHON:-$(at $VENV_DIR)/bin/python}

run() {
    # Run a command, or only show it with --dry-run.
    if [[ $DRY_RUN -eq 1 ]]; then
        printf '[dry-run]'
        printf ' %q' "$@"
        printf '\n'
    else
        "$@"
    fi
}

systemctl_() {
    if [[ $ROOT == / ]]; then
        run "$SYSTEMCTL" "$@"
    else
        run "$SYSTEMCTL" --root="$ROOT" "$@"
    fi
}

user_exists() {
    if [[ $ROOT == / ]]; then
        "$GETENT" passwd "$1" >/dev/null 2>&1
    else
        grep -q "^$1:" "$ROOT/etc/passwd" 2>/dev/null
    fi
}

user_tool() {
    # useradd/usermod/userdel, against the target root's /etc/passwd under --root.
    local tool=$1
    shift
    if [[ $ROOT == / ]]; then
        run "$tool" "$@"
    else
        run "$tool" --prefix "$ROOT" "$@"
    fi
}

ensure_user() {
    local name=$1 groups=$2 home=$3
    if user_exists "$name"; then
        log "user $name exists; making sure it is in $groups"
        user_tool "$USERMOD" --append --groups "$groups" "$name"
    else
        log "creating system user $name (no login; groups $groups)"
        user_tool "$USERADD" --system --user-group --no-create-home --home-dir "$home" \
            --shell /usr/sbin/nologin --groups "$groups" "$name"
    fi
}

install_packages() {
    local packages=("${BASE_PACKAGES[@]}")
    if [[ $WITH_DISPLAY -eq 1 ]]; then packages+=("${DISPLAY_PACKAGES[@]}"); fi
    if [[ $NO_APT -eq 1 ]]; then
        log "--no-apt: make sure these are installed: ${packages[*]}"
        return
    fi
    log "installing apt packages: ${packages[*]}"
    run "$APT_GET" update
    run env DEBIAN_FRONTEND=noninteractive "$APT_GET" install -y --no-install-recommends \
        "${packages[@]}"
}

copy_app() {
    # A fresh copy of the source tree (no venv, caches or git metadata) replaces the old
    # one, which is kept as app.prev until the next update.
    local target new prev
    target=$(at $APP_DIR)
    new=$target.new
    prev=$target.prev
    log "copying $SOURCE_DIR to $APP_DIR"
    [[ -f $SOURCE_DIR/pyproject.toml ]] || die "$SOURCE_DIR has no pyproject.toml; use --source"
    run rm -rf "$new"
    run mkdir -p "$new"
    if [[ $DRY_RUN -eq 1 ]]; then
        echo "[dry-run] tar -C $SOURCE_DIR ... | tar -C $new -x"
    else
        tar -C "$SOURCE_DIR" --exclude=.git --exclude=.venv --exclude=__pycache__ \
            --exclude='*.egg-info' --exclude=build --exclude=dist --exclude=.pytest_cache \
            --exclude=.mypy_cache --exclude=.ruff_cache --exclude=./data -cf - . |
            tar -C "$new" -xf -
    fi
    if [[ -e $target ]]; then
        run rm -rf "$prev"
        run mv "$target" "$prev"
    fi
    run mv "$new" "$target"
    run chmod -R u=rwX,go=rX "$target"
}

install_venv() {
    local venv constraints
    venv=$(at $VENV_DIR)
    constraints=$(at $APP_DIR)/constraints/pi.txt
    if [[ -x $venv/bin/python ]]; then
        log "venv $VENV_DIR exists; reusing it"
    else
        # --system-site-packages: picamera2/libcamera/simplejpeg and numpy come from apt.
        log "creating venv $VENV_DIR (--system-site-packages)"
        run "$PYTHON" -m venv --system-site-packages "$venv"
    fi
    log "installing the kiosk package with $constraints"
    run "$PIP" install --disable-pip-version-check --constraint "$constraints" "$(at $APP_DIR)"
    # Same version number, new code: reinstall the app itself without touching its deps.
    run "$PIP" install --disable-pip-version-check --no-deps --force-reinstall "$(at $APP_DIR)"
    log "checking that the venv still uses apt's numpy 1.x (see constraints/pi.txt)"
    run "$VENV_PYTHON" -c "$NUMPY_CHECK"
}

install_config() {
    local dir file example
    dir=$(at $CONFIG_DIR)
    file=$(at $CONFIG_FILE)
    example=$(at $APP_DIR)/systemd/kiosk.toml.example
    run mkdir -p "$dir"
    run chmod 0750 "$dir"
    run "$CHOWN" "root:$KIOSK_USER" "$dir"
    run install -m 0644 "$example" "$dir/kiosk.toml.example"
    if [[ -e $file ]]; then
        log "$CONFIG_FILE exists; leaving it as it is (compare with kiosk.toml.example)"
    else
        log "creating $CONFIG_FILE from the example (root:$KIOSK_USER 0640): edit it"
        run install -m 0640 "$example" "$file"
        run "$CHOWN" "root:$KIOSK_USER" "$file"
    fi
}

install_units() {
    local dir unit units=("${CORE_UNITS[@]}")
    dir=$(at $UNIT_DIR)
    if [[ $WITH_DISPLAY -eq 1 ]]; then units+=("$DISPLAY_UNIT"); fi
    run mkdir -p "$dir"
    for unit in "${units[@]}"; do
        run install -m 0644 "$(at $APP_DIR)/systemd/$unit" "$dir/$unit"
    done
}

install_wrapper() {
    # `sudo kiosk doctor` etc. run as the kiosk user with the service's environment, so
    # files they create in /var/lib/kiosk stay readable by the service.
    local wrapper
    wrapper=$(at $WRAPPER)
    run mkdir -p "$(dirname "$wrapper")"
    if [[ $DRY_RUN -eq 1 ]]; then
        echo "[dry-run] write $wrapper"
        return
    fi
    cat >"$wrapper" <<EOF
#!/bin/sh
# Installed by lightbox kiosk systemd/install.sh: run kiosk commands as the service does.
export KIOSK_CONFIG=$CONFIG_FILE KIOSK_DATA_DIR=$DATA_DIR
if [ "\$(id -u)" -eq 0 ]; then
    exec runuser -u $KIOSK_USER -- $VENV_DIR/bin/kiosk "\$@"
fi
exec $VENV_DIR/bin/kiosk "\$@"
EOF
    chmod 0755 "$wrapper"
}

activate_units() {
    local enable=("${ENABLE_UNITS[@]}")
    if [[ $WITH_DISPLAY -eq 1 ]]; then enable+=("$DISPLAY_UNIT"); fi
    if [[ $ROOT != / ]]; then
        systemctl_ enable "${enable[@]}"
        if [[ $WITH_DISPLAY -eq 1 ]]; then systemctl_ mask getty@tty1.service; fi
        log "installed under $ROOT; nothing started"
        return
    fi
    systemctl_ daemon-reload
    systemctl_ enable "${enable[@]}"
    # The touchscreen shows the kiosk, not a login prompt (SSH is unaffected).
    if [[ $WITH_DISPLAY -eq 1 ]]; then systemctl_ mask getty@tty1.service; fi
    # restart, not start: an update must replace the running code.
    systemctl_ restart kiosk.service
    systemctl_ start kiosk-sync.timer kiosk-retention.timer
    if [[ $WITH_DISPLAY -eq 1 ]]; then systemctl_ restart "$DISPLAY_UNIT"; fi
    log "done: systemctl status kiosk; journalctl -u kiosk -f"
}

do_install() {
    install_packages
    ensure_user "$KIOSK_USER" "$CAMERA_GROUPS" "$DATA_DIR"
    if [[ $WITH_DISPLAY -eq 1 ]]; then ensure_user "$DISPLAY_USER" "$DISPLAY_GROUPS" /nonexistent; fi
    copy_app
    install_venv
    install_config
    install_units
    install_wrapper
    activate_units
}

do_uninstall() {
    local unit units=("${CORE_UNITS[@]}" "$DISPLAY_UNIT")
    log "stopping and disabling the kiosk units"
    if [[ $ROOT == / ]]; then
        systemctl_ disable --now "${ENABLE_UNITS[@]}" "$DISPLAY_UNIT" || true
        systemctl_ unmask getty@tty1.service || true
    else
        systemctl_ disable "${ENABLE_UNITS[@]}" "$DISPLAY_UNIT" || true
        systemctl_ unmask getty@tty1.service || true
    fi
    for unit in "${units[@]}"; do
        run rm -f "$(at $UNIT_DIR)/$unit"
    done
    if [[ $ROOT == / ]]; then systemctl_ daemon-reload; fi
    log "removing /opt/kiosk and $WRAPPER"
    run rm -rf "$(at /opt/kiosk)" "$(at $WRAPPER)"
    if [[ $PURGE -eq 1 ]]; then
        log "--purge: deleting $CONFIG_DIR, $DATA_DIR, $LOG_DIR and the users"
        run rm -rf "$(at $CONFIG_DIR)" "$(at $DATA_DIR)" "$(at $LOG_DIR)"
        local name
        for name in "$KIOSK_USER" "$DISPLAY_USER"; do
            if user_exists "$name"; then
                user_tool "$USERDEL" "$name"
            fi
        done
    else
        log "kept $CONFIG_DIR and $DATA_DIR (results, images); --purge deletes them"
    fi
}

if [[ $DRY_RUN -eq 1 ]]; then log "dry run: nothing will be changed"; fi
if [[ $MODE == install ]]; then
    do_install
else
    do_uninstall
fi
