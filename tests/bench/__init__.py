"""Benchmarks and checks of what ``sam build`` ships: bytecode and wheels, sizes, cold starts.

Run through make (``make build``, ``make sizes``, ``make bench``); never part of ``make test``
except the build check, which ``make build`` runs after ``sam build``.
"""
