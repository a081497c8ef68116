"""ipybox's gateway has no authentication; kernelbox's always has. The peer's tests pass no
token, so the shim's gateway and client share one per test process."""

import secrets

TOKEN = secrets.token_urlsafe(32)
