#!/usr/bin/env bash
# Install the peer (ipybox 0.9.2) into its own virtual environment, benchmarks/.venv-ipybox.
# Idempotent: does nothing when the venv already imports ipybox at the pinned version.
# ipybox 0.9.2 imports `mcp`, whose 2.x line breaks it, hence 'mcp<2'. matplotlib is for the
# figure workload (the peer's kernels run in this venv); it is pinned to the project's version
# when the project venv has it, so both sides render with the same library.
set -euo pipefail

IPYBOX_VERSION="0.9.2"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${here}/.venv-ipybox"
# The interpreter that makes the venv: $PYTHON, else the project's venv, else python3.
python="${PYTHON:-}"
if [[ -z "${python}" ]]; then
    if [[ -x "${here}/../.venv/bin/python" ]]; then
        # Use the base interpreter behind the project venv, not the venv itself.
        python="$("${here}/../.venv/bin/python" -c 'import sys; print(sys._base_executable)')"
    else
        python="python3"
    fi
fi

matplotlib_spec() {
    local version
    version="$("${here}/../.venv/bin/python" -c 'import importlib.metadata as m; print(m.version("matplotlib"))' 2>/dev/null || true)"
    if [[ -n "${version}" ]]; then echo "matplotlib==${version}"; else echo "matplotlib"; fi
}

installed_version() {
    "${venv}/bin/python" -c 'import importlib.metadata as m, ipybox, matplotlib, psutil; print(m.version("ipybox"))' 2>/dev/null || true
}

if [[ -x "${venv}/bin/python" && "$(installed_version)" == "${IPYBOX_VERSION}" ]]; then
    echo "ipybox ${IPYBOX_VERSION} already installed in ${venv}"
    exit 0
fi

echo "Installing ipybox ${IPYBOX_VERSION} into ${venv} (using ${python})"
"${python}" -m venv "${venv}"
"${venv}/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"${venv}/bin/python" -m pip install --quiet --disable-pip-version-check \
    "ipybox==${IPYBOX_VERSION}" "mcp<2" psutil "$(matplotlib_spec)"
version="$(installed_version)"
if [[ "${version}" != "${IPYBOX_VERSION}" ]]; then
    echo "ipybox did not import from ${venv} (got '${version}')" >&2
    exit 1
fi
echo "ipybox ${version} ready in ${venv}"
