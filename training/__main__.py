"""``python -m training``: fit, evaluate, ablate, export (see ``training/cli.py``)."""

from training.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
