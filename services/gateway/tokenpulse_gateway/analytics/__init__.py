"""Analytics the gateway serves: pure functions over stored history (no I/O), one module per model.

The routes feed them what the store holds; the CLI runs the same code on the bundled history.
"""
