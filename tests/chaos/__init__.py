"""Fault-injection scenarios over the whole local stack, with a Jepsen-style history.

See docs/chaos.md: how the harness works, what each scenario injects, which invariants
are checked over the whole run, and how to run the slow ones and the soak.
"""
