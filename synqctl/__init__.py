"""synqctl: a command-line client for the Synq PIM bulk operations API, standard library only.

Run it as `python -m synqctl --help`; see docs/cli.md.
"""

__version__ = "0.1.0"
