"""The client side: HTTP/REST, the kernel channels over one WebSocket, executions, results, transfer."""
