"""Tools around the agent: tail, bench, demo, doctor, the local broker.

The runtime never imports them (tests/unit/test_imports.py).
"""
