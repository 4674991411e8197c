# Sourced by the load scripts: `need TOOL PACKAGE` installs Debian's PACKAGE when TOOL is missing
# (as root), else says what to install and exits.
need() {
    local tool=$1 package=$2
    command -v "$tool" >/dev/null && return
    if [[ $(id -u) -eq 0 ]]; then
        apt-get install -y -qq "$package" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$package" >/dev/null; }
    else
        echo "$0 needs $tool (Debian: apt-get install $package)" >&2
        exit 1
    fi
}
