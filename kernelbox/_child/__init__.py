"""Code that runs in the gateway's child processes (the gateway itself, kernel launchers), not in the supervisor."""
