"""``python -m lambdarun.local up|status|down``."""

from lambdarun.local.cli import main

main()
