"""``python -m ray_dissect`` runs the CLI."""

from ray_dissect.cli import main

main()
