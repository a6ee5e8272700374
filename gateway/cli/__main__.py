"""``python -m gateway.cli``: the scow command."""

from gateway.cli import main

main()
