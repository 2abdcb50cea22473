# shellcheck shell=bash
# Shared setup for scripts/test and scripts/demo. Source it, do not run it:
#
#   source scripts/bootstrap.sh
#   bootstrap_venv                # .venv with the project and its extras, quiet on success
#   ensure_mosquitto required     # install mosquitto when root, else fail with a message
#   ensure_mosquitto optional     # same, but only warn when it cannot be installed
#   ensure_libfaketime            # the clock-jump fault test needs it: install or fail
#   ensure_rabbitmq               # the broker interop tests need RabbitMQ: install or fail
#   ensure_chromium               # the web-page tests need Debian's chromium + a CJK font
#
# Sets REPO_ROOT, VENV and VENV_PY. Needs only Python >= 3.11 (with its venv module) and
# bash; everything else comes from PyPI or, for mosquitto, from apt when run as root.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO_ROOT/.venv"
VENV_PY="$VENV/bin/python"
# Extras installed into the one shared venv. Extras that pyproject.toml does not define
# are left out, so this list may name extras before they exist.
# scripts/test wants test,dev,demo; scripts/demo sets BOOTSTRAP_EXTRAS=demo (no pytest, no mypy).
BOOTSTRAP_EXTRAS="${BOOTSTRAP_EXTRAS:-test,dev,demo}"
STAMP="$VENV/.edge-agent-install-stamp"

say() { printf '%s\n' "$@" >&2; }

die() {
    say "" "ERROR: $1" "错误：$2"
    exit 1
}

is_root() { [ "$(id -u)" = "0" ]; }

# apt-get install, refreshing the package lists first only when the install fails
# (fresh containers ship without lists). Output goes to a log shown on failure.
apt_install() {
    local log rc=0
    log="$(mktemp -t edge-agent-apt.XXXXXX)"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends "$@" </dev/null >"$log" 2>&1; then
        { apt-get update </dev/null && apt-get install -y --no-install-recommends "$@" </dev/null; } \
            >>"$log" 2>&1 || rc=$?
    fi
    if [ "$rc" != 0 ]; then
        tail -n 30 "$log" >&2
        say "(full apt log: $log)"
        return "$rc"
    fi
    rm -f "$log"
}

# Print the first python >= 3.11 found ($PYTHON wins), or nothing.
find_python() {
    local cand
    for cand in ${PYTHON:-} python3 python3.13 python3.12 python3.11; do
        if command -v "$cand" >/dev/null 2>&1 &&
            "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            command -v "$cand"
            return 0
        fi
    done
    return 0
}

bootstrap_venv() {
    local py
    if [ ! -x "$VENV_PY" ] || ! "$VENV_PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        2>/dev/null; then
        py="$(find_python)"
        if [ -z "$py" ]; then
            die "Python 3.11 or newer is required (found: $(python3 --version 2>&1 || echo none)). Install it, e.g. 'sudo apt-get install python3' on Debian 12 / Raspberry Pi OS bookworm, or set PYTHON=/path/to/python3.11." \
                "需要 Python 3.11 或更高版本（当前：$(python3 --version 2>&1 || echo 无)）。请安装，例如在 Debian 12 / Raspberry Pi OS bookworm 上运行 'sudo apt-get install python3'，或设置 PYTHON=/path/to/python3.11。"
        fi
        if ! "$py" -c 'import venv, ensurepip' >/dev/null 2>&1; then
            local pkg
            pkg="python$("$py" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')-venv"
            if is_root && command -v apt-get >/dev/null 2>&1; then
                say "Installing python3-venv ($pkg) with apt-get ... / 正在用 apt-get 安装 python3-venv ..."
                apt_install python3-venv "$pkg" || apt_install python3-venv ||
                    die "could not install python3-venv with apt-get (see above)." \
                        "无法用 apt-get 安装 python3-venv（见上方输出）。"
            fi
            "$py" -c 'import venv, ensurepip' >/dev/null 2>&1 ||
                die "the Python venv module is missing. Run: sudo apt-get install python3-venv" \
                    "缺少 Python venv 模块。请运行：sudo apt-get install python3-venv"
        fi
        rm -rf "$VENV"
        say "Creating $VENV with $py ... / 正在创建虚拟环境 ..."
        "$py" -m venv "$VENV" || die "could not create $VENV with $py." "无法用 $py 创建 $VENV。"
    fi

    # Reinstall only when something pip cares about changed: pyproject.toml, the chosen
    # extras, the interpreter, or the set of top-level packages (an editable install of a
    # flat layout maps only the packages that existed when it ran).
    local extras want have log have_hash have_extras rc
    extras="$("$VENV_PY" - "$REPO_ROOT/pyproject.toml" "$BOOTSTRAP_EXTRAS" <<'PY'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    defined = tomllib.load(f).get("project", {}).get("optional-dependencies", {})
print(",".join(e for e in sys.argv[2].split(",") if e in defined))
PY
)"
    want="$(
        {
            cat "$REPO_ROOT/pyproject.toml"
            "$VENV_PY" -c 'import sys; print(sys.version)'
            cd "$REPO_ROOT" && ls -d -- */__init__.py 2>/dev/null
        } | sha256sum | cut -d' ' -f1
    )"
    # The stamp is "<hash> <extras installed>": the demo installs only its own extras, and
    # the tests add theirs later without reinstalling what is there.
    have_hash="" have_extras=""
    [ -f "$STAMP" ] && read -r have_hash have_extras <"$STAMP"
    if [ "${have_hash:-}" = "$want" ]; then
        local e missing=""
        for e in ${extras//,/ }; do
            case ",${have_extras:-}," in *",$e,"*) ;; *) missing=1 ;; esac
        done
        [ -z "$missing" ] && return 0
        extras="$(printf '%s' "$extras,${have_extras:-}" | tr ',' '\n' | sed '/^$/d' | sort -u | paste -sd,)"
    fi
    log="$VENV/pip-install.log"
    say "Installing campus-edge-agent[${extras}] into $VENV (a minute on first run; log: $log) ..." \
        "正在安装依赖（首次约需一分钟；日志：$log）..."
    # pip's own lines, one per package, so a first run shows that it is working.
    rc=0
    (
        cd "$REPO_ROOT" || exit 1
        if "$VENV_PY" -m pip install --disable-pip-version-check --progress-bar off \
            -e ".${extras:+[$extras]}" 2>&1; then
            echo 0 >"$VENV/.pip-rc"
        else
            echo "$?" >"$VENV/.pip-rc"
        fi
    ) | tee "$log" | {
        grep --line-buffered -E '^(Collecting|Installing collected|Successfully installed)' |
            cut -c1-100 | sed -u 's/^/  /' >&2
        true
    }
    rc="$(cat "$VENV/.pip-rc" 2>/dev/null || echo 1)"
    if [ "$rc" != 0 ]; then
        tail -n 40 "$log" >&2
        die "pip install failed (full log: $log). Check the network connection to PyPI." \
            "pip 安装失败（完整日志：$log）。请检查到 PyPI 的网络连接。"
    fi
    echo "$want $extras" >"$STAMP"
}

# try_apt_install PACKAGE CHECK: as root with apt-get, install PACKAGE; succeed when the
# command CHECK then passes. Says what it does and, on failure, that it failed.
try_apt_install() {
    local pkg="$1" check="$2"
    is_root && command -v apt-get >/dev/null 2>&1 || return 1
    say "Installing $pkg with apt-get ... / 正在用 apt-get 安装 $pkg ..."
    if apt_install "$pkg" && "$check"; then
        return 0
    fi
    say "apt-get could not install $pkg (see above). / apt-get 无法安装 $pkg（见上方输出）。"
    return 1
}

have_mosquitto() {
    command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || [ -x /usr/local/sbin/mosquitto ]
}

# A Docker engine that answers lets the test fixture use testcontainers instead.
docker_engine_answers() {
    command -v docker >/dev/null 2>&1 && timeout 5 docker info >/dev/null 2>&1
}

# ensure_mosquitto required|optional
ensure_mosquitto() {
    local mode="${1:-required}"
    have_mosquitto && return 0
    try_apt_install mosquitto have_mosquitto && return 0
    if [ "$mode" = optional ]; then
        say "mosquitto is not installed; the embedded Python broker (amqtt) will be used." \
            "To use mosquitto instead: sudo apt-get install -y mosquitto" \
            "未安装 mosquitto，将使用内置的 Python MQTT 代理（amqtt）。" \
            "如需使用 mosquitto：sudo apt-get install -y mosquitto"
        return 0
    fi
    if docker_engine_answers; then
        say "mosquitto is not installed; the tests will run it in Docker (eclipse-mosquitto:2)." \
            "未安装 mosquitto，测试将通过 Docker 运行（eclipse-mosquitto:2）。"
        return 0
    fi
    die "the tests need the mosquitto MQTT broker. Install it with: sudo apt-get install -y mosquitto (or run this script as root to install it automatically)." \
        "测试需要 mosquitto MQTT 代理。请运行：sudo apt-get install -y mosquitto（或以 root 身份运行本脚本自动安装）。"
}

have_libfaketime() {
    [ -n "${EDGE_AGENT_LIBFAKETIME:-}" ] && [ -e "$EDGE_AGENT_LIBFAKETIME" ] && return 0
    compgen -G "/usr/lib/*/faketime/libfaketimeMT.so.1" >/dev/null ||
        [ -e /usr/lib/faketime/libfaketimeMT.so.1 ] || [ -e /usr/local/lib/faketime/libfaketimeMT.so.1 ]
}

# The clock fault test moves the agent's wall clock with libfaketime (LD_PRELOAD).
ensure_libfaketime() {
    have_libfaketime && return 0
    try_apt_install libfaketime have_libfaketime && return 0
    die "the clock fault test needs libfaketime. Install it with: sudo apt-get install -y libfaketime (or run this script as root to install it automatically; EDGE_AGENT_LIBFAKETIME=/path/to/libfaketimeMT.so.1 points at another build)." \
        "时钟故障测试需要 libfaketime。请运行：sudo apt-get install -y libfaketime（或以 root 身份运行本脚本自动安装；也可用 EDGE_AGENT_LIBFAKETIME 指定其路径）。"
}

have_rabbitmq() {
    [ -n "${EDGE_AGENT_RABBITMQ_SERVER:-}" ] && [ -x "$EDGE_AGENT_RABBITMQ_SERVER" ] && return 0
    compgen -G "/usr/lib/rabbitmq/lib/rabbitmq_server-*/sbin/rabbitmq-server" >/dev/null
}

# The broker interop tests run data and commands through RabbitMQ's MQTT plugin (a node of
# their own on ephemeral ports, started and stopped by the test fixture). Installing the
# package as root does not start the system service where a policy-rc.d forbids it (containers).
ensure_rabbitmq() {
    have_rabbitmq && return 0
    try_apt_install rabbitmq-server have_rabbitmq && return 0
    die "the broker interop tests need RabbitMQ. Install it with: sudo apt-get install -y rabbitmq-server (or run this script as root to install it automatically; EDGE_AGENT_RABBITMQ_SERVER=/path/to/sbin/rabbitmq-server points at another install). The tests start a node of their own; the system service may stay stopped: sudo systemctl disable --now rabbitmq-server" \
        "代理互通测试需要 RabbitMQ。请运行：sudo apt-get install -y rabbitmq-server（或以 root 身份运行本脚本自动安装；也可用 EDGE_AGENT_RABBITMQ_SERVER 指定 sbin/rabbitmq-server 的路径）。测试会自行启动独立节点，系统服务可以保持停止：sudo systemctl disable --now rabbitmq-server"
}

have_chromium() {
    if [ -n "${EDGE_AGENT_CHROMIUM:-}" ]; then
        [ -x "$EDGE_AGENT_CHROMIUM" ] || return 1
    else
        command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || return 1
    fi
    # Without a CJK font Chinese text draws as empty boxes in the screenshots.
    command -v fc-list >/dev/null 2>&1 && [ -n "$(fc-list :lang=zh 2>/dev/null)" ]
}

# The console's pages are tested in a real headless browser: Debian's chromium driven by
# Playwright through executable_path (Playwright's own browser download is not possible on
# a closed build network), with fonts-wqy-microhei so the pages' Chinese text renders.
ensure_chromium() {
    have_chromium && return 0
    if is_root && command -v apt-get >/dev/null 2>&1; then
        say "Installing chromium and fonts-wqy-microhei with apt-get ... / 正在用 apt-get 安装 chromium 和中文字体 ..."
        apt_install chromium fonts-wqy-microhei fontconfig && have_chromium && return 0
        say "apt-get could not install chromium (see above). / apt-get 无法安装 chromium（见上方输出）。"
    fi
    die "the web console tests need Debian's chromium and a CJK font. Install them with: sudo apt-get install -y chromium fonts-wqy-microhei (or run this script as root to install them automatically; EDGE_AGENT_CHROMIUM=/path/to/chromium points at another build)." \
        "Web 控制台测试需要 chromium 浏览器和中文字体。请运行：sudo apt-get install -y chromium fonts-wqy-microhei（或以 root 身份运行本脚本自动安装；也可用 EDGE_AGENT_CHROMIUM 指定浏览器路径）。"
}
