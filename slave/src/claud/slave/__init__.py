"""CLAUD slave agent: runs the allocations the masters place on this node.

Modules, one responsibility each: ``settings`` (flags and environment),
``resources`` (capacity and usage), ``masters`` (leader tracking, HTTP),
``fencing`` (the lease), ``reconciler`` (pure desired-vs-observed diff),
``agent`` (the loops), ``api`` (the HTTP app), ``runtime`` (docker, simulated).
"""
