"""``python -m w2sd_cli``: the same as the ``w2sd`` command."""

from w2sd_cli.cli import main

if __name__ == "__main__":
    main()
