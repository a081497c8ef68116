"""The loopback TCP forwarder whose live connections a test can cut (shared with the benchmarks)."""

from benchmarks._proxy import CuttableProxy, cuttable_proxy

__all__ = ["CuttableProxy", "cuttable_proxy"]
