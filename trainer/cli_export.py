"""Subcommands export / evaluate / sweep of `crack-train` (filled in by trainer.export and trainer.evaluate)."""


def register(sub) -> None:
    pass
