"""``python -I -m kernelbox._child.gateway OPTIONS_JSON``: run the gateway process.

Run by `KernelGateway` in a session of its own, possibly inside the OS sandbox, with the
listening socket as standard input and its options (`GatewayProcessOptions`, as JSON) as the
only argument. The steps are ordered, which is why they live here and not in
`kernelbox._child.gateway.app`, whose import is the last of them:

1. **Harden**, before anything else and so before any kernel exists: undumpable (kernels of
   the same uid cannot read this process's memory, environment or descriptors), then a new
   session keyring (kernels cannot read the supervisor's keys); see
   `kernelbox._child.kernel.hardening`.
2. **Read the options**: a bad argument stops the process before any kernel exists.
3. **Start the first kernel** (`kernelbox._child.gateway.prelaunch`), so that it imports
   ipykernel while this process imports Jupyter Server.
4. **Refuse three slow optional imports** (`_refuse_slow_optional_imports`).
5. **Import the gateway and serve** (`kernelbox._child.gateway.app.serve`).
"""

from __future__ import annotations

import atexit
import sys

from kernelbox._child.gateway.options import GatewayProcessOptions
from kernelbox._child.gateway.prelaunch import PrelaunchedKernel, prelaunch_kernel, report_failure
from kernelbox._child.kernel.hardening import join_new_session_keyring, make_undumpable

# jsonschema imports these, when installed, for optional format checks ("iri", "uri",
# "duration"): rfc3987_syntax builds a parser at import time (measured at 1.2 s of the
# gateway's ~2 s start), rfc3986_validator compiles its patterns (~30 ms), isoduration imports
# arrow (~15 ms). The gateway validates only Jupyter Server's own event schemas and events,
# whose one formatted field is each schema's "$id" URI, fixed in the package.
SLOW_OPTIONAL_IMPORTS = ("rfc3987_syntax", "rfc3986_validator", "isoduration")


def _refuse_slow_optional_imports() -> None:
    """Make `SLOW_OPTIONAL_IMPORTS` fail with ImportError (jsonschema then skips those checks)."""
    for name in SLOW_OPTIONAL_IMPORTS:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> None:
    """Harden this process, start the first kernel, then serve until stopped.

    Args:
        argv: the options JSON as the only argument; ``sys.argv[1:]`` by default.
    """
    make_undumpable()
    join_new_session_keyring()
    args = sys.argv[1:] if argv is None else argv
    options = GatewayProcessOptions.from_process_argument(args[0]) if args else GatewayProcessOptions()
    prelaunched: PrelaunchedKernel | None = None
    try:
        prelaunched = prelaunch_kernel()
    except (LookupError, ValueError, OSError) as exc:  # reported; kernels then start as usual
        report_failure(exc)
    else:
        # Also when an import below fails: the process never outlives this one.
        atexit.register(prelaunched.discard)
    _refuse_slow_optional_imports()
    from kernelbox._child.gateway.app import serve

    serve(options, prelaunched=prelaunched)


if __name__ == "__main__":
    main()
