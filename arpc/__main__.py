"""``python -m arpc``: same as the ``arpc`` console script."""

from .cli import main

main()
