"""``python -m pilegate``: the same as the ``pilegate`` command."""

from pilegate.cli import main

main()
