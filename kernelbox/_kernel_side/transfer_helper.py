"""kernelbox's file-transfer helper: runs INSIDE the kernel, never in the kernelbox process.

The client sends this file's source once per kernel and installs it as the module
``sys.modules["_kernelbox_transfer"]`` (see `kernelbox.client.transfer`); every function answers
with one ``display_data`` message whose MIME bundle has a single `MIME` entry. It must stay
self-contained (standard library and IPython only) and importable on any Python the kernel runs.

Kernel code can replace or change this module at will: it is a convenience for the client, not
a security boundary.
"""

import base64, hashlib, os, stat

VERSION = 2
MIME = 'application/vnd.kernelbox.transfer+json'
MARKER = '# kernelbox file transfer\n'
CELL_NAME = "<kernelbox-transfer>"
_transfers = {}


def _shell():
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return get_ipython()


def _patch_cell_names():
    # ipykernel names each cell after a pure-Python murmur2 hash of its source (about 0.75 s per
    # MiB) and IPython keeps every cell's source in linecache under that name for good. Transfer
    # cells carry data, so they all get one cheap name instead, which forget() drops.
    compiler = getattr(_shell(), "compile", None)
    original = getattr(compiler, "get_code_name", None)
    if original is None or getattr(original, "kernelbox_transfer", False):
        return

    def get_code_name(raw_code, code, number):
        if raw_code.startswith(MARKER):
            return CELL_NAME
        return original(raw_code, code, number)

    get_code_name.kernelbox_transfer = True
    compiler.get_code_name = get_code_name


_patch_cell_names()


def forget():
    import linecache
    linecache.cache.pop(CELL_NAME, None)
    getattr(getattr(_shell(), "compile", None), "_filename_map", {}).pop(CELL_NAME, None)


class KernelboxTransferError(Exception):
    """A refused or failed transfer; str() is "<reason>: <message>"."""


def _fail(reason, message):
    raise KernelboxTransferError(reason + ": " + message)


def _publish(payload):
    from IPython.display import publish_display_data
    publish_display_data({MIME: payload})


def _base():
    return os.path.realpath(getattr(_shell(), "starting_dir", None) or os.getcwd())


def _resolve(path, allow_outside):
    base = _base()
    target = os.path.realpath(os.path.join(base, path))
    if not allow_outside and os.path.commonpath([base, target]) != base:
        _fail("outside", "%r resolves to %s, outside the kernel's working directory %s; "
              "use a path inside it" % (path, target, base))
    return target


def begin_upload(tid, path, allow_outside):
    target = _resolve(path, allow_outside)
    if os.path.isdir(target):
        _fail("not_a_file", "%s is a directory; give the file's path" % target)
    parent = os.path.dirname(target)
    part = os.path.join(parent, ".kernelbox-upload-%s.part" % tid)
    try:
        os.makedirs(parent, exist_ok=True)
        # 0o666 less the umask, as a plain open() would create it; O_EXCL: never someone else's file.
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as exc:
        _fail("os_error", "cannot write in %s: %s" % (parent, exc))
    _transfers[tid] = {"file": os.fdopen(fd, "wb"), "part": part, "target": target,
                       "hash": hashlib.sha256(), "size": 0}


def put(tid, data):
    state = _transfers[tid]
    chunk = base64.b64decode(data)
    try:
        state["file"].write(chunk)
    except OSError as exc:
        abort(tid)
        _fail("os_error", "cannot write %s: %s" % (state["target"], exc))
    state["hash"].update(chunk)
    state["size"] += len(chunk)


def commit_upload(tid, size, sha256):
    state = _transfers.pop(tid)
    try:
        state["file"].close()
        if state["size"] != size or state["hash"].hexdigest() != sha256:
            _fail("integrity", "%s arrived damaged (%d of %d bytes, checksum %s)"
                  % (state["target"], state["size"], size,
                      "ok" if state["hash"].hexdigest() == sha256 else "mismatch"))
        os.replace(state["part"], state["target"])
    except BaseException as exc:
        if os.path.exists(state["part"]):
            os.unlink(state["part"])
        if isinstance(exc, OSError):
            _fail("os_error", "cannot write %s: %s" % (state["target"], exc))
        raise
    _publish({"tid": tid, "path": state["target"], "size": size, "base": _base()})


def begin_download(tid, path, allow_outside, max_bytes):
    target = _resolve(path, allow_outside)
    try:
        file = open(target, "rb")
    except FileNotFoundError:
        _fail("not_found", "%s does not exist" % target)
    except IsADirectoryError:
        _fail("not_a_file", "%s is a directory, not a file" % target)
    except OSError as exc:
        _fail("os_error", "cannot read %s: %s" % (target, exc))
    info = os.fstat(file.fileno())
    if not stat.S_ISREG(info.st_mode):
        file.close()
        _fail("not_a_file", "%s is not a regular file" % target)
    if max_bytes is not None and info.st_size > max_bytes:
        file.close()
        _fail("too_large", "%s is %d bytes, more than max_bytes=%d" % (target, info.st_size, max_bytes))
    _transfers[tid] = {"file": file, "target": target, "hash": hashlib.sha256(), "size": 0,
                       "max_bytes": max_bytes}
    _publish({"tid": tid, "path": target, "size": info.st_size, "base": _base()})


def get(tid, chunk_bytes):
    state = _transfers[tid]
    try:
        chunk = state["file"].read(chunk_bytes)
    except OSError as exc:
        abort(tid)
        _fail("os_error", "cannot read %s: %s" % (state["target"], exc))
    state["hash"].update(chunk)
    state["size"] += len(chunk)
    if state["max_bytes"] is not None and state["size"] > state["max_bytes"]:
        abort(tid)
        _fail("too_large", "%s grew past max_bytes=%d while it was read" % (state["target"], state["max_bytes"]))
    payload = {"tid": tid, "data": base64.b64encode(chunk).decode("ascii"), "eof": not chunk}
    if not chunk:
        abort(tid)
        payload["sha256"] = state["hash"].hexdigest()
        payload["size"] = state["size"]
    _publish(payload)


def abort(tid):
    state = _transfers.pop(tid, None)
    if state is None:
        return
    state["file"].close()
    part = state.get("part")
    if part and os.path.exists(part):
        os.unlink(part)
