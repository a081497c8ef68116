"""Adapters that plug a kernelbox kernel into agent frameworks.

- `kernelbox.integrations.tool`: framework-neutral: a tool description (name, description,
  JSON Schema, async callable) that any framework can wrap in a few lines. No extra dependency.
- `kernelbox.integrations.autogen`: an AutoGen `CodeExecutor` (``pip install 'kernelbox[autogen]'``).
- `kernelbox.integrations.langchain`: a LangChain tool (``pip install 'kernelbox[langchain]'``).

Each adapter module imports its framework; this package imports none of them.
"""
