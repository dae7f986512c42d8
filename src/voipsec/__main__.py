"""``python -m voipsec`` runs the command line."""

from .cli import main

main()
