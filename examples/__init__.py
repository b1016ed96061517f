"""Runnable examples of sa_crablet: ``python -m examples.<name>`` from the repository root.

See docs/examples.md for what each one shows and its options.
"""
