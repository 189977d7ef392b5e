"""Run in a fresh interpreter by the cold-start benchmark: import one handler module and report
how long that took. Standard library only, nothing imported before the clock starts.

Usage (as the benchmark runs it; ``-I -S -B``: no site-packages, no environment, no bytecode
written, so the replica stays as shipped)::

    python -I -S -B child.py <module> <attribute> <sys.path entry>...

Prints ``<t0> <t_import> <t_ready>`` (``time.monotonic_ns``: the top of this script, the start of
the handler import, the handler ready), then one JSON line: the modules loaded from outside the
given paths and the standard library (they must be none: Lambda would not have them).
"""

import time

T0 = time.monotonic_ns()

import sys  # noqa: E402 - built in, already loaded; nothing may run before the clock starts


def _main() -> None:
    module_name, attribute, *paths = sys.argv[1:]
    sys.path[0:0] = paths
    t_import = time.monotonic_ns()
    __import__(module_name)
    handler = getattr(sys.modules[module_name], attribute)
    t_ready = time.monotonic_ns()
    if not callable(handler):
        raise TypeError(f"{module_name}.{attribute} is not callable")
    sys.stdout.write(f"{T0} {t_import} {t_ready}\n")

    import json
    import sysconfig

    allowed = [*paths, sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"]]
    outside = []
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if (
            name not in ("__main__", "__mp_main__")
            and isinstance(file, str)
            and not file.startswith(tuple(allowed))
        ):
            outside.append(name)
    sys.stdout.write(json.dumps({"outside": sorted(outside), "modules": len(sys.modules)}) + "\n")


_main()
