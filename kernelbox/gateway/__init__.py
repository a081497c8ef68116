"""The supervisor side: configuration, launching (direct or sandboxed) and supervising a gateway process."""
