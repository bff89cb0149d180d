"""Placeholder for evaluate/sweep subcommands."""


def register(sub) -> None:
    pass
