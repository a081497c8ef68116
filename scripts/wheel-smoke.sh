#!/usr/bin/env bash
# Packaging smoke test: build the wheel and sdist, install the wheel alone (no extras) into a
# fresh virtual environment outside the checkout, and use it as a new user would:
# import every module, `kernelbox run`, `kernelbox doctor`, `kernelbox sandbox install` (srt
# into a scratch per-user data directory), then a sandboxed run.
# Needs: python3 with venv, the project venv (.venv, for `build`), node and npm for srt.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/kernelbox-wheel-smoke.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
log() { printf 'wheel-smoke: %s\n' "$*" >&2; }

log "building the wheel and sdist into $WORK/dist"
"$ROOT/.venv/bin/python" -m build --outdir "$WORK/dist" "$ROOT" >"$WORK/build.log" 2>&1 || { cat "$WORK/build.log" >&2; exit 1; }
wheel="$(ls "$WORK"/dist/kernelbox-*.whl)"
sdist="$(ls "$WORK"/dist/kernelbox-*.tar.gz)"
tar tzf "$sdist" > "$WORK/sdist.txt"
for member in LICENSE README.md kernelbox/py.typed kernelbox/sandbox/srt_lock/package-lock.json; do
    grep -q "^kernelbox-[^/]*/$member\$" "$WORK/sdist.txt" || { log "the sdist lacks $member"; exit 1; }
done
"$ROOT/.venv/bin/python" - "$wheel" <<'PY'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
text = zipfile.ZipFile(sys.argv[1]).read(meta).decode()
for needed in ("kernelbox/py.typed", "kernelbox/sandbox/srt_lock/package-lock.json",
               "kernelbox/sandbox_configs/default.json", "kernelbox/_kernel_side/working_dir.py"):
    assert needed in names, f"the wheel lacks {needed}"
for field in ("Classifier: Typing :: Typed", "License-File: LICENSE", "Requires-Dist: platformdirs"):
    assert field in text, f"the wheel's METADATA lacks {field!r}"
PY

log "installing $(basename "$wheel") alone into a fresh virtual environment"
"$PYTHON" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install --quiet --disable-pip-version-check "$wheel"
BIN="$WORK/venv/bin"
cd "$WORK"  # outside the checkout: nothing from it may be found
export XDG_DATA_HOME="$WORK/data"  # a scratch per-user data directory for srt
export XDG_DATA_DIRS="$WORK/site"  # as root, srt goes to the site data directory instead
# As root the sandbox runs as the unprivileged sandbox user: it must reach the venv and srt.
chmod 755 "$WORK"
unset KERNELBOX_SRT

log "importing every module that needs no extra"
"$BIN/python" - <<'PY'
import importlib, pkgutil, kernelbox
# The MCP server's modules need the 'mcp' extra (the SDK, starlette); the adapters theirs.
optional = ("kernelbox.integrations.autogen", "kernelbox.integrations.langchain")
for module in pkgutil.walk_packages(kernelbox.__path__, "kernelbox."):
    if module.name not in optional and not module.name.startswith("kernelbox.mcp._") \
            and not module.name.endswith("__main__") \
            and not module.name.startswith("kernelbox._kernel_side"):
        importlib.import_module(module.name)
assert kernelbox.__file__.startswith(__import__("sys").prefix), kernelbox.__file__
print("kernelbox", kernelbox.__version__)
PY

printf 'x = 41\n# %%%%\nprint(x + 1)\n' > cells.py
log "kernelbox run"
"$BIN/kernelbox" run cells.py > run.out
grep -qx 42 run.out || { cat run.out >&2; log "kernelbox run did not print 42"; exit 1; }

log "kernelbox doctor before set-up (srt is not installed yet)"
"$BIN/kernelbox" doctor > doctor-before.out 2>&1 || true
grep -q "kernelbox sandbox install" doctor-before.out || { cat doctor-before.out >&2; log "doctor does not offer the set-up command"; exit 1; }

log "kernelbox sandbox install"
"$BIN/kernelbox" sandbox install
"$BIN/kernelbox" doctor

# As a new user would: from the project directory that holds the venv (and here srt too). As
# root the directory is root's: kernelbox grants the sandbox user access with an ACL entry.
log "kernelbox run --sandbox from the project directory holding the venv"
cat > project.py <<'PY'
import os, sys
print(1)
try:
    with open(os.path.join(sys.prefix, "lib", "planted.pth"), "w") as file:
        file.write("import os")
    print("WROTE-INTO-THE-VENV")
except OSError as exc:
    print("the venv is read-only:", exc.strerror)
with open("made-by-the-kernel.txt", "w") as file:
    file.write("ok")
PY
"$BIN/kernelbox" run --sandbox project.py > sandboxed.out 2>&1 || { cat sandboxed.out >&2; log "the sandboxed run failed"; exit 1; }
grep -qx 1 sandboxed.out || { cat sandboxed.out >&2; log "the sandboxed run did not print 1"; exit 1; }
grep -q "the venv is read-only" sandboxed.out || { cat sandboxed.out >&2; log "the kernel could write into the venv"; exit 1; }
[ "$(cat made-by-the-kernel.txt)" = ok ] || { log "the kernel could not write its project directory"; exit 1; }
[ ! -e "$WORK/venv/lib/planted.pth" ] || { log "a file was planted in the venv"; exit 1; }
log "ok: a fresh virtual environment with only the wheel reached a sandboxed print(1) from its project"
