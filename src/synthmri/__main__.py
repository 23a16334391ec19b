"""``python -m synthmri``."""

from synthmri.cli import main

main()
