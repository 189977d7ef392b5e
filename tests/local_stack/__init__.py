"""The local stack: the whole backend on localhost without Docker (``make dev``; see stack.py).

Importing this package puts the template's layers (the shared ``mysetlist`` package) on
``sys.path``, as Lambda puts them on ``/opt/python``, so ``python -m tests.local_stack.<tool>``
works without further setup.
"""

from tests.support.template import default_template

default_template().add_layers_to_path()
